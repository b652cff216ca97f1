package usageevents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Defaults of [Config].
const (
	DefaultTopic           = "llm-usage"
	DefaultClientID        = "usageevents"
	DefaultBufferSize      = 50_000
	DefaultDeliveryTimeout = 2 * time.Minute
	DefaultLinger          = 20 * time.Millisecond
	DefaultDropLogInterval = 10 * time.Second
)

// KeyStrategy chooses the Kafka message key of each event.
type KeyStrategy int

const (
	// KeyAttributes keys each event by its attribute set (the default): a stable hash of the
	// labels every metrics profile of the consumer has, byte for byte the consumer's own
	// definition (consumer/keys/attributes.py). Every event of one set lands on one partition,
	// so each worker of a group holds only its share of the series.
	KeyAttributes KeyStrategy = iota
	// KeyEventID keys each event by its event_id: an even spread whatever the traffic, but
	// every worker ends up holding nearly every attribute set.
	KeyEventID
	// KeyNone sends events without a key: franz-go's sticky partitioner spreads batches.
	KeyNone
)

// DropReason says why an event was not delivered. The values are the reason attribute of the
// usageevents.dropped counter.
type DropReason string

// The reasons an event is dropped.
const (
	// DropBufferFull: [Config.BufferSize] events were already waiting for Kafka.
	DropBufferFull DropReason = "buffer_full"
	// DropTimeout: Kafka did not acknowledge the event within [Config.DeliveryTimeout]: it was
	// unreachable, or kept answering with retriable errors, for that long.
	DropTimeout DropReason = "delivery_timeout"
	// DropInvalid: the consumer would reject the event (see [UsageOptions]); it was not sent.
	DropInvalid DropReason = "invalid"
	// DropRejected: Kafka refused the event with a non-retriable error (authorization, too
	// large, ...) or its topic stayed unknown.
	DropRejected DropReason = "rejected"
	// DropClosed: the publisher was closed before the event was delivered, or when it was
	// recorded.
	DropClosed DropReason = "closed"
)

var dropReasons = [...]DropReason{DropBufferFull, DropTimeout, DropInvalid, DropRejected, DropClosed}

// Config configures a [Publisher]. Only Brokers is required.
type Config struct {
	// Brokers are the seed brokers, host:port.
	Brokers []string
	// Topic is the topic of usage events; it must exist. Default DefaultTopic.
	Topic string
	// ClientID is the Kafka client.id. Default DefaultClientID.
	ClientID string
	// Key is how events are keyed. Default KeyAttributes.
	Key KeyStrategy
	// BufferSize bounds the events recorded and not yet acknowledged (in memory: a few hundred
	// bytes each). Past it, events are dropped as DropBufferFull. Default DefaultBufferSize.
	BufferSize int
	// DeliveryTimeout bounds how long an event may wait for Kafka: one not acknowledged within
	// it (Kafka unreachable for longer) is dropped as DropTimeout. An event whose produce
	// request was sent and not answered is never dropped before the broker answers, since it
	// may have been written (idempotence); it can outlive the bound. At least a second;
	// default DefaultDeliveryTimeout.
	DeliveryTimeout time.Duration
	// Linger is how long a partition's batch waits for more events. Default DefaultLinger.
	Linger time.Duration
	// MeterProvider provides the meter of the usageevents.delivered and usageevents.dropped
	// counters. Default the global one (otel.GetMeterProvider), a no-op unless set.
	MeterProvider metric.MeterProvider
	// Logger receives the rate-limited drop reports. Default slog.Default().
	Logger *slog.Logger
	// DropLogInterval is the least time between two drop reports. Default
	// DefaultDropLogInterval.
	DropLogInterval time.Duration
	// OnDelivered, when set, is called with the value of every event Kafka acknowledged, from
	// the producer's callback goroutine: it must be quick, must not block and must not keep
	// value (copy it).
	OnDelivered func(value []byte)
	// ClientOptions are extra franz-go options (TLS, SASL, ...). The options that make the
	// contract (acks, idempotence, partitioner, topic, buffer and delivery timeout) are applied
	// after them and cannot be overridden.
	ClientOptions []kgo.Opt
}

// Stats counts the events of a [Publisher] since it was made.
type Stats struct {
	// Enqueued is how many events RecordUsage handed to the producer.
	Enqueued uint64
	// Delivered is how many of them Kafka acknowledged.
	Delivered uint64
	// Pending is how many are waiting for Kafka (Enqueued - Delivered - those dropped after
	// being enqueued).
	Pending int64
	// Dropped counts the events dropped, by reason; reasons with none are absent.
	Dropped map[DropReason]uint64
}

// DroppedTotal is the number of events dropped, whatever the reason.
func (s Stats) DroppedTotal() uint64 {
	var n uint64
	for _, c := range s.Dropped {
		n += c
	}
	return n
}

// ErrClosed is returned by [Publisher.Close] when the publisher was already closed.
var ErrClosed = errors.New("usageevents: publisher closed")

var errBufferFull = errors.New("usageevents: buffer full")

// Publisher publishes usage events to Kafka. Its methods are safe for concurrent use.
type Publisher struct {
	client      *kgo.Client
	key         KeyStrategy
	limit       int64
	promise     func(*kgo.Record, error)
	onDelivered func([]byte)

	// mu orders RecordUsage (read-locked) against Close: once closed is set, nothing more
	// reaches the client.
	mu      sync.RWMutex
	closed  bool
	closing atomic.Bool
	drained chan struct{} // closed once closing and nothing is pending
	drain   sync.Once

	pending   atomic.Int64
	enqueued  atomic.Uint64
	delivered atomic.Uint64
	dropped   [len(dropReasons)]atomic.Uint64

	deliveredCounter metric.Int64Counter
	droppedCounter   metric.Int64Counter
	dropAttrs        [len(dropReasons)]metric.AddOption

	logger      *slog.Logger
	logInterval int64        // nanoseconds
	lastLog     atomic.Int64 // unix nanoseconds of the last drop report
	loggedTotal atomic.Uint64

	// Replaced by tests to make events reproducible.
	now     func() time.Time
	eventID func([]byte) []byte
}

// NewPublisher returns a publisher producing to cfg.Topic. It does not wait for the brokers:
// events recorded before they answer wait in the buffer.
func NewPublisher(cfg Config) (*Publisher, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("usageevents: Config.Brokers is empty")
	}
	topic := cmpOr(cfg.Topic, DefaultTopic)
	bufferSize := cmpOr(cfg.BufferSize, DefaultBufferSize)
	timeout := cmpOr(cfg.DeliveryTimeout, DefaultDeliveryTimeout)
	interval := cmpOr(cfg.DropLogInterval, DefaultDropLogInterval)
	if bufferSize < 0 || interval < 0 || cfg.Linger < 0 {
		return nil, errors.New("usageevents: negative BufferSize, Linger or DropLogInterval")
	}
	if timeout < time.Second {
		return nil, fmt.Errorf("usageevents: DeliveryTimeout %v is under a second", timeout)
	}
	if cfg.Key < KeyAttributes || cfg.Key > KeyNone {
		return nil, fmt.Errorf("usageevents: unknown KeyStrategy %d", cfg.Key)
	}
	mp := cfg.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}

	p := &Publisher{
		key:         cfg.Key,
		limit:       int64(bufferSize),
		onDelivered: cfg.OnDelivered,
		drained:     make(chan struct{}),
		logger:      logger,
		logInterval: int64(interval),
		now:         time.Now,
		eventID:     appendUUID,
	}
	p.promise = p.finish // bound once: no allocation per event
	p.lastLog.Store(time.Now().UnixNano() - int64(interval))

	meter := mp.Meter("github.com/llm-usage-consumer/clients/go/usageevents")
	var err error
	p.deliveredCounter, err = meter.Int64Counter("usageevents.delivered",
		metric.WithUnit("{event}"),
		metric.WithDescription("Usage events acknowledged by Kafka"))
	if err != nil {
		return nil, fmt.Errorf("usageevents: %w", err)
	}
	p.droppedCounter, err = meter.Int64Counter("usageevents.dropped",
		metric.WithUnit("{event}"),
		metric.WithDescription("Usage events dropped, never delivered, by reason"))
	if err != nil {
		return nil, fmt.Errorf("usageevents: %w", err)
	}
	for i, r := range dropReasons {
		p.dropAttrs[i] = metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", string(r))))
	}

	opts := []kgo.Opt{
		kgo.ClientID(cmpOr(cfg.ClientID, DefaultClientID)),
		kgo.ProducerLinger(cmpOr(cfg.Linger, DefaultLinger)),
		// zstd where the brokers support it (Kafka >= 2.1), else lz4: JSON compresses 3-6x.
		kgo.ProducerBatchCompression(kgo.ZstdCompression(), kgo.Lz4Compression(), kgo.NoCompression()),
	}
	opts = append(opts, cfg.ClientOptions...)
	opts = append(opts,
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.DefaultProduceTopic(topic),
		// murmur2 on the key, as the Java client, librdkafka's murmur2_random and the
		// consumer's own publisher: one attribute set, one partition, whoever sent it.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// Idempotent writes are franz-go's default and stay on: a retried batch is written once.
		kgo.RecordDeliveryTimeout(timeout),
		// The publisher bounds the buffer itself (BufferSize) before calling TryProduce, so the
		// client's own bound is never what refuses a record: TryProduce then never fails before
		// buffering, a path that may park the caller.
		kgo.MaxBufferedRecords(bufferSize+1024),
	)
	p.client, err = kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("usageevents: %w", err)
	}
	return p, nil
}

func cmpOr[T comparable](v, fallback T) T {
	var zero T
	if v == zero {
		return fallback
	}
	return v
}

// RecordUsage publishes one usage event made of opts: it fills in event_id and occurred_at (now),
// encodes the event and hands it to the producer, without waiting for Kafka. It never blocks on
// Kafka and never fails: an event that cannot be sent is dropped and counted (see
// [DropReason]). ctx is only used for the drop counter; the event outlives it.
func (p *Publisher) RecordUsage(ctx context.Context, opts UsageOptions) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		p.drop(ctx, DropClosed, ErrClosed)
		return
	}
	opts.normalize()
	if err := opts.validate(); err != nil {
		p.drop(ctx, DropInvalid, err)
		return
	}
	if p.pending.Add(1) > p.limit {
		p.pending.Add(-1)
		p.drop(ctx, DropBufferFull, errBufferFull)
		return
	}
	p.enqueued.Add(1)
	// Never the caller's context: a request that ends must not cancel its event.
	p.client.TryProduce(context.Background(), p.record(&opts), p.promise)
}

// record builds the Kafka record of o. The key and the value share one allocation (key first),
// and the attribute key's text is hashed in the spare capacity after the value.
func (p *Publisher) record(o *UsageOptions) *kgo.Record {
	buf := make([]byte, 0, sizeHint(o))
	r := new(kgo.Record)
	switch p.key {
	case KeyAttributes:
		value, _, _ := appendEvent(buf[32:32], o, p.eventID, p.now())
		key, _ := attributeKey(value[len(value):], o)
		copy(buf[:32], key[:])
		r.Key, r.Value = buf[:32:32], value
	case KeyEventID:
		value, start, end := appendEvent(buf, o, p.eventID, p.now())
		r.Key, r.Value = value[start:end:end], value
	default:
		r.Value, _, _ = appendEvent(buf, o, p.eventID, p.now())
	}
	return r
}

// finish is the producer's callback for every enqueued event.
func (p *Publisher) finish(r *kgo.Record, err error) {
	if err == nil {
		p.delivered.Add(1)
		p.deliveredCounter.Add(context.Background(), 1)
		if p.onDelivered != nil {
			p.onDelivered(r.Value)
		}
	} else {
		p.drop(context.Background(), reasonOf(err), err)
	}
	if p.pending.Add(-1) == 0 && p.closing.Load() {
		p.drain.Do(func() { close(p.drained) })
	}
}

// reasonOf classifies the error of a record the client failed. franz-go fails a record on a
// network or retriable Kafka error only once its delivery timeout has run out, so those are
// timeouts; Kafka refusing it outright (a non-retriable error, or a topic that stays unknown)
// is a rejection.
func reasonOf(err error) DropReason {
	var ke *kerr.Error
	switch {
	case errors.Is(err, kgo.ErrClientClosed), errors.Is(err, context.Canceled):
		return DropClosed
	case errors.Is(err, kgo.ErrMaxBuffered):
		return DropBufferFull
	case errors.As(err, &ke) && (!ke.Retriable || ke == kerr.UnknownTopicOrPartition):
		return DropRejected
	default:
		return DropTimeout
	}
}

func reasonIndex(reason DropReason) int {
	for i, r := range dropReasons {
		if r == reason {
			return i
		}
	}
	panic("usageevents: unknown drop reason " + string(reason))
}

// drop counts one dropped event and reports drops in the log, at most once per DropLogInterval.
func (p *Publisher) drop(ctx context.Context, reason DropReason, cause error) {
	i := reasonIndex(reason)
	p.dropped[i].Add(1)
	p.droppedCounter.Add(ctx, 1, p.dropAttrs[i])
	now := time.Now().UnixNano()
	last := p.lastLog.Load()
	if now-last < p.logInterval || !p.lastLog.CompareAndSwap(last, now) {
		return
	}
	s := p.Stats()
	total := s.DroppedTotal()
	attrs := []slog.Attr{
		slog.String("reason", string(reason)),
		slog.String("error", cause.Error()),
		slog.Uint64("dropped_since_last_report", total-p.loggedTotal.Swap(total)),
		slog.Uint64("dropped_total", total),
	}
	for _, r := range dropReasons {
		if n := s.Dropped[r]; n > 0 {
			attrs = append(attrs, slog.Uint64("dropped_"+string(r), n))
		}
	}
	attrs = append(attrs, slog.Uint64("delivered_total", s.Delivered), slog.Int64("pending", s.Pending))
	p.logger.LogAttrs(ctx, slog.LevelWarn, "usageevents: dropping usage events", attrs...)
}

// Stats returns the publisher's counts so far.
func (p *Publisher) Stats() Stats {
	s := Stats{
		Enqueued:  p.enqueued.Load(),
		Delivered: p.delivered.Load(),
		Pending:   p.pending.Load(),
		Dropped:   map[DropReason]uint64{},
	}
	for i, r := range dropReasons {
		if n := p.dropped[i].Load(); n > 0 {
			s.Dropped[r] = n
		}
	}
	return s
}

// Close stops taking events (later ones are dropped as DropClosed), waits until every pending
// event is acknowledged or ctx is done, and closes the client. Events still pending then are
// dropped as DropClosed; an error says how many (some may have been written: their requests
// were in flight), along with the totals. Close returns ErrClosed if already closed.
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.closed = true
	p.closing.Store(true)
	p.mu.Unlock()

	flushErr := p.client.Flush(ctx)
	left := p.pending.Load()
	p.client.Close() // fails whatever is left; their callbacks run asynchronously
	if p.pending.Load() == 0 {
		p.drain.Do(func() { close(p.drained) })
	}
	select {
	case <-p.drained:
	case <-time.After(10 * time.Second):
	}
	if left == 0 {
		return nil
	}
	s := p.Stats()
	return fmt.Errorf("usageevents: %d events not delivered by Close (delivered %d, dropped %d in all): %w",
		left, s.Delivered, s.DroppedTotal(), cmpOr(flushErr, error(context.DeadlineExceeded)))
}
