package usageevents

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
	"unicode/utf8"
)

// The wire contract's limits (schemas/usage_event.py).
const (
	// SchemaVersion is the schema_version of every event this package writes.
	SchemaVersion = 1
	// MaxErrorCodeBytes is the length, in UTF-8 bytes, ErrorCode is cut to.
	MaxErrorCodeBytes = 64

	maxLabel     = 128 // code points
	maxModel     = 256
	maxTokens    = 10_000_000
	maxLatencyMs = 86_400_000
)

// occurredAtLayout is RFC 3339 with exactly six fraction digits: the consumer's fast path
// parses it, and it sorts as text.
const occurredAtLayout = "2006-01-02T15:04:05.000000Z07:00"

// errInvalid is wrapped by every validation error.
var errInvalid = errors.New("usageevents: invalid usage event")

// normalize makes o what is written: ErrorCode cut to MaxErrorCodeBytes.
func (o *UsageOptions) normalize() {
	o.ErrorCode = cutErrorCode(o.ErrorCode)
}

// validate reports the first rule of the wire contract o breaks, or nil. The checks are the
// consumer's (schemas/usage_event.py); strings are counted in code points, an invalid UTF-8
// byte being one (it is written as U+FFFD).
func (o *UsageOptions) validate() error {
	if o.Provider == "" {
		return fmt.Errorf("%w: Provider is empty", errInvalid)
	}
	if o.Model == "" {
		return fmt.Errorf("%w: Model is empty", errInvalid)
	}
	switch o.Status {
	case "success", "error", "canceled":
	default:
		return fmt.Errorf("%w: Status %q is not success, error or canceled", errInvalid, o.Status)
	}
	labels := [...]struct {
		name  string
		value string
		limit int
	}{
		{"Operation", o.Operation, maxLabel},
		{"Provider", o.Provider, maxLabel},
		{"ProviderUUID", o.ProviderUUID, maxLabel},
		{"Model", o.Model, maxModel},
		{"RequestModel", o.RequestModel, maxModel},
		{"RuleUUID", o.RuleUUID, maxLabel},
		{"Scenario", o.Scenario, maxLabel},
		{"ErrorCode", o.ErrorCode, maxModel}, // cut to 64 bytes by normalize
		{"UserTier", o.UserTier, maxLabel},
	}
	for _, l := range labels {
		if err := checkText(l.value, l.limit); err != nil {
			return fmt.Errorf("%w: %s %v", errInvalid, l.name, err)
		}
	}
	counts := [...]struct {
		name  string
		value int
		limit int
	}{
		{"InputTokens", o.InputTokens, maxTokens},
		{"OutputTokens", o.OutputTokens, maxTokens},
		{"CacheReadTokens", o.CacheReadTokens, maxTokens},
		{"CacheWriteTokens", o.CacheWriteTokens, maxTokens},
		{"SystemTokens", o.SystemTokens, maxTokens},
		{"LatencyMs", o.LatencyMs, maxLatencyMs},
	}
	for _, c := range counts {
		if c.value < 0 || c.value > c.limit {
			return fmt.Errorf("%w: %s %d is not in [0, %d]", errInvalid, c.name, c.value, c.limit)
		}
	}
	return nil
}

// checkText checks that s holds no control character (C0, DEL, C1) and at most limit code
// points.
func checkText(s string, limit int) error {
	n := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b < 0x20 || b == 0x7f {
				return fmt.Errorf("holds control character U+%04X at byte %d", b, i)
			}
			i++
		} else {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r >= 0x80 && r <= 0x9f {
				return fmt.Errorf("holds control character U+%04X at byte %d", r, i)
			}
			i += size
		}
		n++
	}
	if n > limit {
		return fmt.Errorf("is %d code points long, the limit is %d", n, limit)
	}
	return nil
}

// cutErrorCode returns the longest prefix of code that is at most MaxErrorCodeBytes bytes of
// UTF-8 and does not split a character. Invalid bytes are replaced by U+FFFD first, as they are
// on the wire, so that the cut is the one the consumer would make.
func cutErrorCode(code string) string {
	if len(code) <= MaxErrorCodeBytes && utf8.ValidString(code) {
		return code
	}
	if !utf8.ValidString(code) {
		code = string(appendValidUTF8(nil, code))
	}
	if len(code) <= MaxErrorCodeBytes {
		return code
	}
	cut := MaxErrorCodeBytes
	for cut > 0 && !utf8.RuneStart(code[cut]) {
		cut--
	}
	return code[:cut]
}

// appendValidUTF8 appends s with every byte that is not part of valid UTF-8 replaced by U+FFFD
// (one per byte, as encoding/json does).
func appendValidUTF8(dst []byte, s string) []byte {
	if utf8.ValidString(s) {
		return append(dst, s...)
	}
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = utf8.AppendRune(dst, utf8.RuneError)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return dst
}

// appendString appends s as a JSON string. Only '"', '\\' and control characters are escaped
// (the latter never reach the wire: validate refuses them); invalid UTF-8 bytes are written as
// \ufffd. Everything else is written as it is, in UTF-8.
func appendString(dst []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendUUID appends a random version 4 UUID. math/rand/v2's top-level source is the runtime's
// ChaCha8, seeded from the operating system per thread: unpredictable and lock-free.
func appendUUID(dst []byte) []byte {
	hi, lo := rand.Uint64(), rand.Uint64()
	hi = hi&^0xf000 | 0x4000     // version 4
	lo = lo&^(0xc<<60) | 0x8<<60 // RFC 4122 variant
	var raw [16]byte
	for i := range 8 {
		raw[i] = byte(hi >> (56 - 8*i))
		raw[8+i] = byte(lo >> (56 - 8*i))
	}
	var text [36]byte
	hex.Encode(text[0:8], raw[0:4])
	text[8] = '-'
	hex.Encode(text[9:13], raw[4:6])
	text[13] = '-'
	hex.Encode(text[14:18], raw[6:8])
	text[18] = '-'
	hex.Encode(text[19:23], raw[8:10])
	text[23] = '-'
	hex.Encode(text[24:36], raw[10:16])
	return append(dst, text[:]...)
}

// appendEvent appends the JSON of one event (schemas/usage_event.py, version 1): the fields in
// the order of examples/go-producer's UsageEvent, optional ones left out when zero. o must have
// been normalized. It also returns where event_id is within dst, so that it can serve as the key.
func appendEvent(dst []byte, o *UsageOptions, eventID func([]byte) []byte, at time.Time) (out []byte, idStart, idEnd int) {
	dst = append(dst, `{"schema_version":1,"event_id":"`...)
	idStart = len(dst)
	dst = eventID(dst)
	idEnd = len(dst)
	dst = append(dst, `","occurred_at":"`...)
	dst = at.UTC().Truncate(time.Microsecond).AppendFormat(dst, occurredAtLayout)
	dst = append(dst, '"')
	dst = appendOptional(dst, `,"operation":`, o.Operation)
	dst = append(dst, `,"provider":`...)
	dst = appendString(dst, o.Provider)
	dst = appendOptional(dst, `,"provider_uuid":`, o.ProviderUUID)
	dst = append(dst, `,"model":`...)
	dst = appendString(dst, o.Model)
	dst = appendOptional(dst, `,"request_model":`, o.RequestModel)
	dst = appendOptional(dst, `,"rule_uuid":`, o.RuleUUID)
	dst = appendOptional(dst, `,"scenario":`, o.Scenario)
	dst = append(dst, `,"status":`...)
	dst = appendString(dst, o.Status)
	dst = appendOptional(dst, `,"error_code":`, o.ErrorCode)
	dst = appendOptional(dst, `,"user_tier":`, o.UserTier)
	dst = appendCount(dst, `,"input_tokens":`, o.InputTokens)
	dst = appendCount(dst, `,"output_tokens":`, o.OutputTokens)
	dst = appendCount(dst, `,"cache_read_tokens":`, o.CacheReadTokens)
	dst = appendCount(dst, `,"cache_write_tokens":`, o.CacheWriteTokens)
	dst = appendCount(dst, `,"system_tokens":`, o.SystemTokens)
	dst = appendCount(dst, `,"latency_ms":`, o.LatencyMs)
	if o.Streamed {
		dst = append(dst, `,"streamed":true`...)
	}
	return append(dst, '}'), idStart, idEnd
}

func appendOptional(dst []byte, name, value string) []byte {
	if value == "" {
		return dst
	}
	return appendString(append(dst, name...), value)
}

func appendCount(dst []byte, name string, value int) []byte {
	if value == 0 {
		return dst
	}
	return strconv.AppendInt(append(dst, name...), int64(value), 10)
}

// keySeparator joins the attribute key's fields (U+001F, the unit separator).
const keySeparator = '\x1f'

// attributeKey returns the attribute-set key of o: 32 lowercase hex digits. The definition is
// the consumer's (consumer/keys/attributes.py) and examples/go-producer/key.go's: the values of
// model, provider, provider_uuid, request_model, rule_uuid, scenario, streamed (true/false) and
// user_tier, as written on the wire (an absent field is its zero value ""), joined with U+001F,
// SHA-256, the first 16 bytes in hex. scratch is used for the joined text; it is returned, grown
// if it had to be.
func attributeKey(scratch []byte, o *UsageOptions) (key [32]byte, scratchOut []byte) {
	streamed := "false"
	if o.Streamed {
		streamed = "true"
	}
	fields := [...]string{
		o.Model, o.Provider, o.ProviderUUID, o.RequestModel, o.RuleUUID, o.Scenario, streamed,
		o.UserTier,
	}
	scratch = scratch[:0]
	for i, f := range fields {
		if i > 0 {
			scratch = append(scratch, keySeparator)
		}
		scratch = appendValidUTF8(scratch, f)
	}
	sum := sha256.Sum256(scratch)
	hex.Encode(key[:], sum[:16])
	return key, scratch
}

// sizeHint is a capacity for one event's key, value and key scratch that is enough unless many
// characters must be escaped.
func sizeHint(o *UsageOptions) int {
	text := len(o.Operation) + len(o.Provider) + len(o.ProviderUUID) + len(o.Model) +
		len(o.RequestModel) + len(o.RuleUUID) + len(o.Scenario) + len(o.Status) +
		min(len(o.ErrorCode), MaxErrorCodeBytes) + len(o.UserTier)
	// 32 key digits; ~330 bytes of names, punctuation, id, time and numbers; the key text.
	return 32 + 336 + text + text + 16
}
