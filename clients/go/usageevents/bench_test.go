package usageevents

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// benchBrokersEnv names a real cluster (host:port,...) for BenchmarkEndToEnd; without it that
// benchmark is skipped and BenchmarkRecordUsage runs against an in-process fake cluster.
const benchBrokersEnv = "USAGEEVENTS_BENCH_BROKERS"

// benchOptions is a realistic request: every label set, a cache read, streamed.
var benchOptions = UsageOptions{
	Operation: "chat", Provider: "anthropic", ProviderUUID: "prov-anthropic",
	Model: "claude-sonnet-4", RequestModel: "claude-sonnet-4-latest", RuleUUID: "rule-7",
	Scenario: "claude_code", InputTokens: 1234, OutputTokens: 321, CacheReadTokens: 800,
	Streamed: true, Status: "success", LatencyMs: 2345, UserTier: "enterprise",
}

// benchTopic returns brokers and a topic: the env's cluster (a fresh topic, created here) or
// an in-process fake one.
func benchTopic(b *testing.B, partitions int32) []string {
	b.Helper()
	if env := os.Getenv(benchBrokersEnv); env != "" {
		brokers := strings.Split(env, ",")
		createTopic(b, brokers, partitions)
		return brokers
	}
	return newCluster(b, partitions).ListenAddrs()
}

// createTopic creates testTopic with the given partitions unless it exists.
func createTopic(b *testing.B, brokers []string, partitions int32) {
	b.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrCreateTopicsRequest()
	topic := kmsg.NewCreateTopicsRequestTopic()
	topic.Topic, topic.NumPartitions, topic.ReplicationFactor = testTopic, partitions, 1
	req.Topics = append(req.Topics, topic)
	req.TimeoutMillis = 30_000
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		b.Fatal(err)
	}
	if err := kerr.ErrorForCode(resp.Topics[0].ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		b.Fatal(err)
	}
}

// BenchmarkRecordUsage is the request path: validate, fill, encode, key and enqueue one event.
// The buffer is large enough that nothing is dropped while the cluster keeps up.
func BenchmarkRecordUsage(b *testing.B) {
	brokers := benchTopic(b, 3)
	p, err := NewPublisher(Config{Brokers: brokers, Topic: testTopic, BufferSize: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	p.RecordUsage(ctx, benchOptions) // load the metadata first
	if err := p.client.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		p.RecordUsage(ctx, benchOptions)
	}
	b.StopTimer()
	closeCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := p.Close(closeCtx); err != nil {
		b.Fatal(err)
	}
	if s := p.Stats(); s.DroppedTotal() != 0 {
		b.Fatalf("dropped %v", s.Dropped)
	}
}

// BenchmarkEncode is the part of the request path that does not touch the client.
func BenchmarkEncode(b *testing.B) {
	p := &Publisher{key: KeyAttributes, now: time.Now, eventID: appendUUID}
	b.ReportAllocs()
	for b.Loop() {
		o := benchOptions
		o.normalize()
		if err := o.validate(); err != nil {
			b.Fatal(err)
		}
		_ = p.record(&o)
	}
}

// BenchmarkEndToEnd is the events per second one publisher sustains to a real cluster
// ($USAGEEVENTS_BENCH_BROKERS), from the first RecordUsage until Close has every
// acknowledgement, with a realistic mix of attribute sets (so of keys and partitions).
func BenchmarkEndToEnd(b *testing.B) {
	if os.Getenv(benchBrokersEnv) == "" {
		b.Skipf("set %s=host:port to publish to a real cluster", benchBrokersEnv)
	}
	brokers := benchTopic(b, 3)
	mix := make([]UsageOptions, 512)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range mix {
		o := benchOptions
		o.Model = fmt.Sprintf("model-%d", rng.IntN(16))
		o.Scenario = fmt.Sprintf("scenario-%d", rng.IntN(8))
		o.UserTier = []string{"", "free", "pro", "enterprise"}[rng.IntN(4)]
		o.Streamed = rng.IntN(2) == 0
		o.InputTokens = rng.IntN(100_000)
		mix[i] = o
	}
	p, err := NewPublisher(Config{Brokers: brokers, Topic: testTopic, BufferSize: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	start := time.Now()
	i := 0
	for b.Loop() {
		p.RecordUsage(ctx, mix[i%len(mix)])
		i++
	}
	closeCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := p.Close(closeCtx); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	s := p.Stats()
	if s.DroppedTotal() != 0 || s.Delivered != uint64(i) {
		b.Fatalf("stats %+v after %d events", s, i)
	}
	b.ReportMetric(float64(s.Delivered)/elapsed.Seconds(), "events/s")
}
