package main

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unicode/utf8"
)

// maxErrorCodeBytes is where the tracker cuts an error code (a label value).
const maxErrorCodeBytes = 64

// attributeKey is the message key of an event: a stable hash of its attribute set, so that all
// events of one set land on one partition and each worker of a group holds only its share of
// the series (docs/producing.md, "The message key"). The definition is the consumer's
// (consumer/keys/attributes.py) and must stay byte for byte the same: the attribute fields in
// name order, as their attributes hold them (an empty operation is "chat", the error code cut
// to 64 bytes on a character boundary, booleans as true/false), joined with U+001F, SHA-256,
// the first 16 bytes as 32 lowercase hex digits.
func attributeKey(e *UsageEvent) []byte {
	operation := e.Operation
	if operation == "" {
		operation = "chat"
	}
	streamed := "false"
	if e.Streamed {
		streamed = "true"
	}
	fields := []string{
		cutUTF8(e.ErrorCode, maxErrorCodeBytes),
		e.Model,
		operation,
		e.Provider,
		e.ProviderUUID,
		e.RequestModel,
		e.RuleUUID,
		e.Scenario,
		e.Status,
		streamed,
		e.UserTier,
	}
	sum := sha256.Sum256([]byte(strings.Join(fields, "\x1f")))
	return []byte(hex.EncodeToString(sum[:16]))
}

// cutUTF8 returns the longest prefix of s of at most n bytes that does not split a character.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
