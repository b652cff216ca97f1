package usageevents

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

const testTopic = "llm-usage"

// unreachable is a broker address nothing listens on.
const unreachable = "127.0.0.1:1"

func newCluster(t testing.TB, partitions int32) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, testTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// consumeAll reads n records of the test topic from the beginning.
func consumeAll(t *testing.T, brokers []string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(testTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(out), n, err)
		}
		fetches.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

// murmur2 is Kafka's partitioning hash (the Java client's Utils.murmur2), written out here so
// that the test checks franz-go's partitioner against the definition, not against itself.
func murmur2(data []byte) int32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(data))
	for len(data) >= 4 {
		k := uint32(data[0]) | uint32(data[1])<<8 | uint32(data[2])<<16 | uint32(data[3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
		data = data[4:]
	}
	switch len(data) {
	case 3:
		h ^= uint32(data[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}

func kafkaPartition(key []byte, partitions int32) int32 {
	return (murmur2(key) & 0x7fffffff) % partitions
}

func TestMurmur2KnownValues(t *testing.T) {
	// Values from Kafka's own tests (UtilsTest.testMurmur2).
	tests := []struct {
		in   string
		want int32
	}{
		{"21", -973932308},
		{"foobar", -790332482},
		{"a-little-bit-long-string", -985981536},
		{"a-little-bit-longer-string", -1486304829},
		{"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
		{"abc", 479470107},
	}
	for _, tt := range tests {
		if got := murmur2([]byte(tt.in)); got != tt.want {
			t.Errorf("murmur2(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

// TestPublisherWritesTheVectors publishes every accept vector through a real client to an
// in-process cluster and reads back exactly the vector's bytes and key, on the partition
// Kafka's murmur2 gives the key.
func TestPublisherWritesTheVectors(t *testing.T) {
	f := loadVectors(t, "accept.json")
	id, now := f.fixed(t)
	const partitions = 3
	c := newCluster(t, partitions)
	tests := []struct {
		name string
		key  KeyStrategy
		want func(vc vectorCase) string // the expected key; "" for none
	}{
		{"attributes", KeyAttributes, func(vc vectorCase) string { return vc.Key }},
		{"event id", KeyEventID, func(vectorCase) string { return f.EventID }},
		{"none", KeyNone, func(vectorCase) string { return "" }},
	}
	consumed := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			delivered := map[string]int{}
			p, err := NewPublisher(Config{
				Brokers: c.ListenAddrs(), Topic: testTopic, Key: tt.key,
				OnDelivered: func(v []byte) { mu.Lock(); delivered[string(v)]++; mu.Unlock() },
			})
			if err != nil {
				t.Fatal(err)
			}
			p.eventID, p.now = id, now
			for _, vc := range f.Cases {
				p.RecordUsage(context.Background(), *vc.Options)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := p.Close(ctx); err != nil {
				t.Fatal(err)
			}
			n := uint64(len(f.Cases))
			if s := p.Stats(); s.Enqueued != n || s.Delivered != n || s.Pending != 0 || len(s.Dropped) != 0 {
				t.Fatalf("stats = %+v, want %d enqueued and delivered, none dropped", s, n)
			}
			consumed += len(f.Cases)
			for _, r := range consumeAll(t, c.ListenAddrs(), consumed) {
				if len(r.Key) > 0 && r.Partition != kafkaPartition(r.Key, partitions) {
					t.Errorf("key %s on partition %d, murmur2 says %d", r.Key, r.Partition, kafkaPartition(r.Key, partitions))
				}
			}
		})
	}
	// Every (value, key) pair, as a multiset: the order across partitions is not defined.
	records := consumeAll(t, c.ListenAddrs(), consumed)
	type pair struct{ value, key string }
	gotPairs := map[pair]int{}
	for _, r := range records {
		gotPairs[pair{string(r.Value), string(r.Key)}]++
	}
	wantPairs := map[pair]int{}
	for _, tt := range tests {
		for _, vc := range f.Cases {
			wantPairs[pair{vc.Value, tt.want(vc)}]++
		}
	}
	if len(gotPairs) != len(wantPairs) {
		t.Fatalf("got %d distinct (value, key) pairs, want %d", len(gotPairs), len(wantPairs))
	}
	for k, n := range wantPairs {
		if gotPairs[k] != n {
			t.Errorf("(value %s, key %q): %d on the topic, want %d", k.value, k.key, gotPairs[k], n)
		}
	}
}

func TestOnDeliveredSeesEveryAcknowledgedEvent(t *testing.T) {
	c := newCluster(t, 2)
	var mu sync.Mutex
	var values [][]byte
	p, err := NewPublisher(Config{Brokers: c.ListenAddrs(), Topic: testTopic,
		OnDelivered: func(v []byte) { mu.Lock(); values = append(values, bytes.Clone(v)); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	const n = 500
	for i := range n {
		p.RecordUsage(context.Background(), UsageOptions{Provider: "openai", Model: "gpt-4o",
			Status: "success", InputTokens: i + 1})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(values) != n {
		t.Fatalf("OnDelivered saw %d events, want %d", len(values), n)
	}
	ids := map[string]bool{}
	sum := 0
	for _, v := range values {
		var e struct {
			SchemaVersion int    `json:"schema_version"`
			EventID       string `json:"event_id"`
			OccurredAt    string `json:"occurred_at"`
			InputTokens   int    `json:"input_tokens"`
		}
		if err := json.Unmarshal(v, &e); err != nil {
			t.Fatal(err)
		}
		if e.SchemaVersion != 1 || len(e.EventID) != 36 || e.EventID[14] != '4' {
			t.Errorf("bad version or id: %s", v)
		}
		at, err := time.Parse(occurredAtLayout, e.OccurredAt)
		if err != nil || !strings.HasSuffix(e.OccurredAt, "Z") || len(e.OccurredAt) != len("2006-01-02T15:04:05.000000Z") {
			t.Errorf("occurred_at %q: %v", e.OccurredAt, err)
		}
		if d := time.Since(at); d < 0 || d > time.Minute {
			t.Errorf("occurred_at %s is %v from now", e.OccurredAt, d)
		}
		ids[e.EventID] = true
		sum += e.InputTokens
	}
	if len(ids) != n || sum != n*(n+1)/2 {
		t.Errorf("%d distinct ids, input tokens %d; want %d and %d", len(ids), sum, n, n*(n+1)/2)
	}
}

func TestInvalidUTF8IsWrittenAsReplacementCharacters(t *testing.T) {
	tests := []struct {
		name      string
		scenario  string
		wantJSON  string
		wantLabel string // the text the key hashes
	}{
		{"one bad byte", "caf\xe9", `"scenario":"caf\ufffd"`, "caf\uFFFD"},
		{"two bad bytes", "\xff\xfe", `"scenario":"\ufffd\ufffd"`, "\uFFFD\uFFFD"},
		{"valid", "café", `"scenario":"café"`, "café"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := UsageOptions{Provider: "openai", Model: "gpt-4o", Status: "success", Scenario: tt.scenario}
			if err := o.validate(); err != nil {
				t.Fatal(err)
			}
			value, _, _ := appendEvent(nil, &o, appendUUID, time.Now())
			if !bytes.Contains(value, []byte(tt.wantJSON)) {
				t.Errorf("%s does not contain %s", value, tt.wantJSON)
			}
			var decoded struct{ Scenario string }
			if err := json.Unmarshal(value, &decoded); err != nil || decoded.Scenario != tt.wantLabel {
				t.Errorf("decoded scenario %q (%v), want %q", decoded.Scenario, err, tt.wantLabel)
			}
			key, _ := attributeKey(nil, &o)
			clean := o
			clean.Scenario = tt.wantLabel
			want, _ := attributeKey(nil, &clean)
			if key != want {
				t.Errorf("key %s, want the key of the replaced text %s", key[:], want[:])
			}
		})
	}
}

func TestCutErrorCode(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"short", "rate_limited", "rate_limited"},
		{"exactly 64", strings.Repeat("a", 64), strings.Repeat("a", 64)},
		{"65", strings.Repeat("a", 65), strings.Repeat("a", 64)},
		{"never splits a character", strings.Repeat("a", 63) + "é", strings.Repeat("a", 63)},
		{"4-byte character at the edge", strings.Repeat("a", 62) + "😀", strings.Repeat("a", 62)},
		{"invalid byte counts as 3", strings.Repeat("a", 62) + "\xff", strings.Repeat("a", 62)},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cutErrorCode(tt.in); got != tt.want {
				t.Errorf("cutErrorCode = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := UsageOptions{Provider: "openai", Model: "gpt-4o", Status: "success"}
	tests := []struct {
		name    string
		change  func(*UsageOptions)
		wantErr string // "" means valid
	}{
		{"valid", func(*UsageOptions) {}, ""},
		{"no provider", func(o *UsageOptions) { o.Provider = "" }, "Provider is empty"},
		{"no model", func(o *UsageOptions) { o.Model = "" }, "Model is empty"},
		{"bad status", func(o *UsageOptions) { o.Status = "done" }, `Status "done"`},
		{"tab in scenario", func(o *UsageOptions) { o.Scenario = "a\tb" }, "Scenario holds control character U+0009"},
		{"C1 in tier", func(o *UsageOptions) { o.UserTier = "\u009f" }, "UserTier holds control character U+009F"},
		{"129 code points", func(o *UsageOptions) { o.RuleUUID = strings.Repeat("é", 129) }, "RuleUUID is 129 code points long"},
		{"128 code points", func(o *UsageOptions) { o.RuleUUID = strings.Repeat("é", 128) }, ""},
		{"negative latency", func(o *UsageOptions) { o.LatencyMs = -5 }, "LatencyMs -5"},
		{"long error code is cut, not refused", func(o *UsageOptions) { o.ErrorCode = strings.Repeat("x", 1000) }, ""},
		{"control character past the cut", func(o *UsageOptions) { o.ErrorCode = strings.Repeat("x", 64) + "\n" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ok
			tt.change(&o)
			o.normalize()
			err := o.validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error %v, want one containing %q", err, tt.wantErr)
			case err != nil && !errors.Is(err, errInvalid):
				t.Errorf("error %v does not wrap errInvalid", err)
			}
		})
	}
}

func TestNewPublisherRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no brokers", Config{}},
		{"negative buffer", Config{Brokers: []string{unreachable}, BufferSize: -1}},
		{"negative timeout", Config{Brokers: []string{unreachable}, DeliveryTimeout: -time.Second}},
		{"timeout under a second", Config{Brokers: []string{unreachable}, DeliveryTimeout: 999 * time.Millisecond}},
		{"unknown key", Config{Brokers: []string{unreachable}, Key: KeyStrategy(7)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if p, err := NewPublisher(tt.cfg); err == nil {
				_ = p.Close(context.Background())
				t.Fatal("NewPublisher accepted it")
			}
		})
	}
}

// droppedCounts reads the usageevents.dropped counter, by reason.
func droppedCounts(t *testing.T, reader *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "usageevents.dropped" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				reason, _ := dp.Attributes.Value("reason")
				out[reason.AsString()] = dp.Value
			}
		}
	}
	return out
}

// logLines is a slog handler's output, safe for concurrent use.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logLines) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSpace(l.buf.String()), "\n")
}

func TestDropsAreCountedNeverBlocking(t *testing.T) {
	valid := UsageOptions{Provider: "openai", Model: "gpt-4o", Status: "success", InputTokens: 3}
	invalid := UsageOptions{Provider: "openai", Model: "gpt-4o", Status: "??"}
	tests := []struct {
		name        string
		buffer      int
		valid       int
		invalid     int
		wantDropped map[DropReason]uint64 // before Close
	}{
		{"buffer full", 10, 25, 0, map[DropReason]uint64{DropBufferFull: 15}},
		{"invalid", 10, 0, 4, map[DropReason]uint64{DropInvalid: 4}},
		{"both", 5, 8, 2, map[DropReason]uint64{DropBufferFull: 3, DropInvalid: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reader := sdkmetric.NewManualReader()
			logs := &logLines{}
			p, err := NewPublisher(Config{
				Brokers: []string{unreachable}, BufferSize: tt.buffer,
				MeterProvider:   sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
				Logger:          slog.New(slog.NewTextHandler(logs, nil)),
				DropLogInterval: time.Hour,
			})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for range tt.valid {
				p.RecordUsage(context.Background(), valid)
			}
			for range tt.invalid {
				p.RecordUsage(context.Background(), invalid)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("recording took %v with Kafka unreachable", d)
			}
			s := p.Stats()
			wantEnqueued := uint64(min(tt.valid, tt.buffer))
			if s.Enqueued != wantEnqueued || s.Pending != int64(wantEnqueued) || s.Delivered != 0 {
				t.Errorf("stats %+v, want %d enqueued and pending", s, wantEnqueued)
			}
			if !equalCounts(s.Dropped, tt.wantDropped) {
				t.Errorf("dropped %v, want %v", s.Dropped, tt.wantDropped)
			}
			want := map[string]int64{}
			for r, n := range tt.wantDropped {
				want[string(r)] = int64(n)
			}
			if got := droppedCounts(t, reader); !equalCounts(got, want) {
				t.Errorf("usageevents.dropped = %v, want %v", got, want)
			}
			// One report for the whole burst: the interval is an hour.
			if lines := logs.lines(); len(lines) != 1 || !strings.Contains(lines[0], "dropping usage events") {
				t.Errorf("log lines %q, want one report", lines)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			err = p.Close(ctx)
			if wantEnqueued > 0 && (err == nil || !strings.Contains(err.Error(), "not delivered")) {
				t.Errorf("Close = %v, want an error counting the undelivered", err)
			}
			s = p.Stats()
			if s.Pending != 0 || s.Delivered+s.DroppedTotal() != uint64(tt.valid+tt.invalid) {
				t.Errorf("after Close: %+v; delivered + dropped must be every call", s)
			}
			if s.Dropped[DropClosed] != wantEnqueued {
				t.Errorf("dropped as closed: %d, want %d", s.Dropped[DropClosed], wantEnqueued)
			}
			p.RecordUsage(context.Background(), valid)
			if got := p.Stats().Dropped[DropClosed]; got != wantEnqueued+1 {
				t.Errorf("RecordUsage after Close: %d dropped as closed, want %d", got, wantEnqueued+1)
			}
			if err := p.Close(context.Background()); !errors.Is(err, ErrClosed) {
				t.Errorf("second Close = %v, want ErrClosed", err)
			}
		})
	}
}

func equalCounts[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestUnreachableKafkaDropsAfterTheDeliveryTimeout(t *testing.T) {
	p, err := NewPublisher(Config{Brokers: []string{unreachable}, DeliveryTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	for range 7 {
		p.RecordUsage(context.Background(), UsageOptions{Provider: "openai", Model: "gpt-4o", Status: "success"})
	}
	deadline := time.Now().Add(15 * time.Second)
	for p.Stats().Dropped[DropTimeout] < 7 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if s := p.Stats(); s.Dropped[DropTimeout] != 7 || s.Pending != 0 {
		t.Fatalf("stats %+v, want 7 dropped as delivery_timeout", s)
	}
}

func TestConcurrentRecordUsage(t *testing.T) {
	c := newCluster(t, 3)
	p, err := NewPublisher(Config{Brokers: c.ListenAddrs(), Topic: testTopic, BufferSize: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 8, 250
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				p.RecordUsage(context.Background(), UsageOptions{Provider: "openai", Model: "gpt-4o",
					Status: "success", Scenario: []string{"a", "b", "c"}[g%3], InputTokens: i})
			}
		})
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Delivered != goroutines*each || s.DroppedTotal() != 0 {
		t.Fatalf("stats %+v, want %d delivered", s, goroutines*each)
	}
	if got := len(consumeAll(t, c.ListenAddrs(), goroutines*each)); got != goroutines*each {
		t.Fatalf("%d records on the topic", got)
	}
}

func TestReasonOf(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	tests := []struct {
		name string
		err  error
		want DropReason
	}{
		{"record timeout", kgo.ErrRecordTimeout, DropTimeout},
		{"retries", kgo.ErrRecordRetries, DropTimeout},
		{"connection refused past the timeout", dial, DropTimeout},
		{"retriable Kafka error past the timeout", kerr.NotLeaderForPartition, DropTimeout},
		{"unknown topic", kerr.UnknownTopicOrPartition, DropRejected},
		{"too large", fmt.Errorf("wrapped: %w", kerr.MessageTooLarge), DropRejected},
		{"not authorized", kerr.TopicAuthorizationFailed, DropRejected},
		{"client closed", kgo.ErrClientClosed, DropClosed},
		{"max buffered", kgo.ErrMaxBuffered, DropBufferFull},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := reasonOf(tt.err); got != tt.want {
				t.Errorf("reasonOf(%v) = %s, want %s", tt.err, got, tt.want)
			}
		})
	}
}
