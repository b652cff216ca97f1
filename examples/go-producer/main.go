// Command go-producer publishes schema-valid LLM usage events to Kafka the way a gateway
// should (docs/producing.md): durable producer settings, keyed by attribute set, one JSON
// object per message. It prints what was delivered as JSON on stdout, so a test can compare it with
// what the consumer counted.
package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// newClient returns a producer with the settings docs/producing.md recommends. acks=all and
// idempotent writes are franz-go's defaults; they are spelled out so that nobody turns them
// off by accident.
func newClient(brokers []string, topic, clientID string) (*kgo.Client, error) {
	return kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ClientID(clientID),
		kgo.DefaultProduceTopic(topic),
		// murmur2 on the key, as the Java client and the consumer's own producer partition:
		// one attribute set, one partition, whichever producer sent it.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.RequiredAcks(kgo.AllISRAcks()), // acked once every in-sync replica has it
		// Idempotent writes stay on (the default): a retried batch is written once.
		// zstd where the brokers support it (Kafka >= 2.1), else lz4: JSON compresses 3-6x.
		kgo.ProducerBatchCompression(kgo.ZstdCompression(), kgo.Lz4Compression(), kgo.NoCompression()),
		kgo.ProducerLinger(20*time.Millisecond),  // fuller batches, better compression
		kgo.RecordDeliveryTimeout(2*time.Minute), // retry for this long, then fail the record
		kgo.MaxBufferedRecords(100_000),          // bounds memory while the cluster is away
	)
}

// modelTotals is what was delivered for one provider and model.
type modelTotals struct {
	Provider     string `json:"provider"`
	Model        string `json:"model"`
	Events       int64  `json:"events"`
	Errors       int64  `json:"errors"`
	InputTokens  int64  `json:"input_tokens"`
	OutputTokens int64  `json:"output_tokens"`
}

// report is printed on stdout at the end.
type report struct {
	Topic        string         `json:"topic"`
	Seed         uint64         `json:"seed"`
	Events       int64          `json:"events"` // delivered (acknowledged by the broker)
	Failed       int64          `json:"failed"`
	InputTokens  int64          `json:"input_tokens"`
	OutputTokens int64          `json:"output_tokens"`
	Models       []*modelTotals `json:"models"` // sorted by provider, then model
}

// tally counts delivered events; delivery callbacks may run concurrently.
type tally struct {
	mu     sync.Mutex
	report report
	models map[[2]string]*modelTotals
	sink   *bufio.Writer // every delivered value, one per line, when -events is set
}

func (t *tally) delivered(e *UsageEvent, value []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	key := [2]string{e.Provider, e.Model}
	m := t.models[key]
	if m == nil {
		m = &modelTotals{Provider: e.Provider, Model: e.Model}
		t.models[key] = m
	}
	m.Events++
	m.InputTokens += e.InputTokens
	m.OutputTokens += e.OutputTokens
	if e.Status == "error" {
		m.Errors++
	}
	t.report.Events++
	t.report.InputTokens += e.InputTokens
	t.report.OutputTokens += e.OutputTokens
	if t.sink == nil {
		return nil
	}
	if _, err := t.sink.Write(value); err != nil {
		return err
	}
	return t.sink.WriteByte('\n')
}

func (t *tally) failed() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.report.Failed++
}

func (t *tally) final() report {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.report
	r.Models = make([]*modelTotals, 0, len(t.models))
	for _, m := range t.models {
		r.Models = append(r.Models, m)
	}
	slices.SortFunc(r.Models, func(a, b *modelTotals) int {
		return cmp.Or(cmp.Compare(a.Provider, b.Provider), cmp.Compare(a.Model, b.Model))
	})
	return r
}

func run() error {
	brokers := flag.String("brokers", "127.0.0.1:9092", "Kafka bootstrap servers, comma-separated")
	topic := flag.String("topic", "llm-usage", "topic of usage events")
	count := flag.Int("count", 1000, "how many events to publish")
	seed := flag.Uint64("seed", 1, "seed of the event mix: the same seed gives the same events")
	eventsPath := flag.String("events", "", "also write every delivered event to this file, one JSON object per line")
	clientID := flag.String("client-id", "go-producer-example", "Kafka client.id")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	client, err := newClient(strings.Split(*brokers, ","), *topic, *clientID)
	if err != nil {
		return err
	}
	defer client.Close()
	pingCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := client.Ping(pingCtx); err != nil {
		return fmt.Errorf("no broker reachable at %s: %w", *brokers, err)
	}

	t := &tally{report: report{Topic: *topic, Seed: *seed}, models: map[[2]string]*modelTotals{}}
	var eventsFile *os.File
	if *eventsPath != "" {
		if eventsFile, err = os.Create(*eventsPath); err != nil {
			return err
		}
		defer eventsFile.Close() // on early returns; closed and checked below otherwise
		t.sink = bufio.NewWriter(eventsFile)
	}

	var (
		sinkErr  error
		sinkOnce sync.Once
	)
	gen := newGenerator(*seed)
	for range *count {
		e := gen.next(time.Now())
		value, err := json.Marshal(&e)
		if err != nil {
			return err
		}
		// Keyed by attribute set: every event of one set lands on one partition, so each worker
		// of the group holds only its share of the series; a record sent again lands on the
		// same partition as the first copy.
		record := &kgo.Record{Key: attributeKey(&e), Value: value}
		// Produce blocks only when MaxBufferedRecords are waiting: back-pressure for a batch
		// job like this one. A gateway's request path would call TryProduce instead, which
		// fails at once with kgo.ErrMaxBuffered rather than stall a user's request.
		client.Produce(ctx, record, func(r *kgo.Record, err error) {
			if err != nil {
				t.failed()
				log.Printf("event %s not delivered: %v", e.EventID, err)
				return
			}
			if err := t.delivered(&e, r.Value); err != nil {
				sinkOnce.Do(func() { sinkErr = err })
			}
		})
	}
	// Flush waits for every record's callback.
	if err := client.Flush(ctx); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	if t.sink != nil {
		sinkErr = errors.Join(sinkErr, t.sink.Flush(), eventsFile.Close())
	}
	if sinkErr != nil {
		return fmt.Errorf("writing %s: %w", *eventsPath, sinkErr)
	}

	r := t.final()
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", "  ")
	if err := out.Encode(r); err != nil {
		return err
	}
	if r.Failed > 0 {
		return fmt.Errorf("%d of %d events not delivered", r.Failed, *count)
	}
	return nil
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("go-producer: ")
	if err := run(); err != nil {
		log.Fatal(err)
	}
}
