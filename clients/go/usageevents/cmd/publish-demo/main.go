// Command publish-demo records a deterministic mix of usage events through a
// usageevents.Publisher at a steady rate, as a gateway's request path would, then closes it and
// prints what happened as JSON on stdout: how many events were delivered and how many dropped,
// by reason. With -events it also writes every delivered event, one JSON object per line: the
// exact bytes Kafka acknowledged. tests/test_go_publisher.py runs it while it kills the broker.
//
// It writes "ready" on stderr once the brokers answer, then a progress line every -progress
// events.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/llm-usage-consumer/clients/go/usageevents"
	"github.com/twmb/franz-go/pkg/kgo"
)

type report struct {
	Topic        string            `json:"topic"`
	Recorded     int               `json:"recorded"` // RecordUsage calls
	Enqueued     uint64            `json:"enqueued"`
	Delivered    uint64            `json:"delivered"`
	Dropped      map[string]uint64 `json:"dropped"`
	DroppedTotal uint64            `json:"dropped_total"`
	CloseError   string            `json:"close_error"`
	Seconds      float64           `json:"seconds"`
}

var (
	providers = []string{"openai", "anthropic", "google"}
	models    = map[string][]string{
		"openai":    {"gpt-4o", "gpt-4o-mini"},
		"anthropic": {"claude-sonnet-4", "claude-haiku-3.5"},
		"google":    {"gemini-2.5-pro"},
	}
	tiers = []string{"", "free", "pro"}
)

// next is one request of the mix; the same seed gives the same sequence.
func next(rng *rand.Rand) usageevents.UsageOptions {
	provider := providers[rng.IntN(len(providers))]
	o := usageevents.UsageOptions{
		Provider:     provider,
		ProviderUUID: "prov-" + provider,
		Model:        models[provider][rng.IntN(len(models[provider]))],
		Scenario:     []string{"chat", "code"}[rng.IntN(2)],
		UserTier:     tiers[rng.IntN(len(tiers))],
		Streamed:     rng.IntN(2) == 0,
		LatencyMs:    rng.IntN(5000),
		Status:       "success",
		InputTokens:  rng.IntN(4000),
		OutputTokens: rng.IntN(1000),
	}
	switch roll := rng.IntN(100); {
	case roll < 5:
		o.Status, o.ErrorCode, o.OutputTokens = "error", "rate_limited", 0
	case roll < 8:
		o.Status, o.OutputTokens = "canceled", 0
	}
	if rng.IntN(4) == 0 {
		o.CacheReadTokens = rng.IntN(2000)
	}
	return o
}

func run() error {
	brokers := flag.String("brokers", "127.0.0.1:9092", "Kafka bootstrap servers, comma-separated")
	topic := flag.String("topic", "llm-usage", "topic of usage events (must exist)")
	count := flag.Int("count", 10_000, "events to record")
	rate := flag.Float64("rate", 500, "events per second (0: as fast as possible)")
	seed := flag.Uint64("seed", 1, "seed of the event mix")
	buffer := flag.Int("buffer", usageevents.DefaultBufferSize, "Config.BufferSize")
	timeout := flag.Duration("delivery-timeout", usageevents.DefaultDeliveryTimeout, "Config.DeliveryTimeout")
	closeTimeout := flag.Duration("close-timeout", time.Minute, "deadline of Close")
	eventsPath := flag.String("events", "", "write every delivered event to this file, one per line")
	progress := flag.Int("progress", 1000, "write a progress line on stderr every this many events")
	flag.Parse()

	seeds := strings.Split(*brokers, ",")
	ping, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		return err
	}
	pingCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = ping.Ping(pingCtx)
	cancel()
	ping.Close()
	if err != nil {
		return fmt.Errorf("no broker reachable at %s: %w", *brokers, err)
	}

	var (
		mu        sync.Mutex
		delivered [][]byte
	)
	p, err := usageevents.NewPublisher(usageevents.Config{
		Brokers:         seeds,
		Topic:           *topic,
		BufferSize:      *buffer,
		DeliveryTimeout: *timeout,
		DropLogInterval: 2 * time.Second,
		Logger:          slog.New(slog.NewTextHandler(os.Stderr, nil)),
		OnDelivered: func(v []byte) {
			c := append([]byte(nil), v...)
			mu.Lock()
			delivered = append(delivered, c)
			mu.Unlock()
		},
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "ready")

	rng := rand.New(rand.NewPCG(*seed, 0x9e3779b97f4a7c15))
	ctx := context.Background()
	start := time.Now()
	for i := range *count {
		if *rate > 0 {
			if d := time.Until(start.Add(time.Duration(float64(i) / *rate * float64(time.Second)))); d > 0 {
				time.Sleep(d)
			}
		}
		p.RecordUsage(ctx, next(rng))
		if *progress > 0 && (i+1)%*progress == 0 {
			s := p.Stats()
			fmt.Fprintf(os.Stderr, "recorded %d delivered %d dropped %d pending %d\n",
				i+1, s.Delivered, s.DroppedTotal(), s.Pending)
		}
	}
	closeCtx, cancel := context.WithTimeout(ctx, *closeTimeout)
	defer cancel()
	closeErr := p.Close(closeCtx)

	s := p.Stats()
	r := report{
		Topic: *topic, Recorded: *count, Enqueued: s.Enqueued, Delivered: s.Delivered,
		Dropped: map[string]uint64{}, DroppedTotal: s.DroppedTotal(),
		Seconds: time.Since(start).Seconds(),
	}
	for reason, n := range s.Dropped {
		r.Dropped[string(reason)] = n
	}
	if closeErr != nil {
		r.CloseError = closeErr.Error()
	}
	if *eventsPath != "" {
		if err := writeLines(*eventsPath, delivered); err != nil {
			return err
		}
	}
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", "  ")
	return out.Encode(r)
}

func writeLines(path string, values [][]byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, v := range values {
		w.Write(v)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("publish-demo: ")
	if err := run(); err != nil {
		log.Fatal(err)
	}
}
