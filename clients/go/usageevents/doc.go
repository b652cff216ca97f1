// Package usageevents publishes LLM usage events to Kafka for llm-usage-consumer.
//
// It is the gateway side of the wire contract in docs/producing.md: a [Publisher] has the
// method a gateway already calls on its OpenTelemetry token tracker,
//
//	RecordUsage(ctx context.Context, opts UsageOptions)
//
// so moving a gateway from counting in-process to publishing events is one constructor:
//
//	// before: tt, err := tracker.NewTokenTracker(meter)
//	tt, err := usageevents.NewPublisher(usageevents.Config{Brokers: brokers})
//	...
//	tt.RecordUsage(ctx, opts) // unchanged
//	...
//	defer tt.Close(shutdownCtx)
//
// Each call becomes one usage event, schema version 1 (schemas/usage_event.py): a JSON object
// with a fresh event_id (a version 4 UUID) and occurred_at (the time of the call, UTC, in
// microseconds), keyed by the event's attribute set (see [KeyAttributes]).
//
// The request path never waits for Kafka. RecordUsage validates and encodes the event and hands
// it to an asynchronous, idempotent, acks=all, compressed franz-go producer, within a bounded
// buffer ([Config.BufferSize]). An event is dropped, never blocking the caller, when the buffer
// is full, when it is not acknowledged within [Config.DeliveryTimeout] (Kafka unreachable for
// longer than that), when it would be rejected by the consumer anyway ([DropInvalid]), or when
// the publisher is closed. Every drop is counted, in [Publisher.Stats], in the OpenTelemetry
// counter usageevents.dropped{reason} and in a rate-limited log line; acknowledged events are
// counted in usageevents.delivered.
package usageevents
