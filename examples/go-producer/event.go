package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// UsageEvent is one LLM request, schema version 1 (schemas/usage_event.v1.schema.json).
//
// Its fields are the gateway's current UsageOptions (docs/producing.md maps each one). Optional
// fields carry omitempty: the consumer treats a missing field as its zero value, so leaving
// them out only saves bytes. Token counts are int64 and marshal as JSON integers. Cache reads
// go in cache_read_tokens; the seed's cache_input_tokens is still accepted, not needed.
type UsageEvent struct {
	SchemaVersion    int       `json:"schema_version"`
	EventID          string    `json:"event_id"`
	OccurredAt       time.Time `json:"occurred_at"`
	Operation        string    `json:"operation,omitempty"`
	Provider         string    `json:"provider"`
	ProviderUUID     string    `json:"provider_uuid,omitempty"`
	Model            string    `json:"model"`
	RequestModel     string    `json:"request_model,omitempty"`
	RuleUUID         string    `json:"rule_uuid,omitempty"`
	Scenario         string    `json:"scenario,omitempty"`
	Status           string    `json:"status"`
	ErrorCode        string    `json:"error_code,omitempty"`
	UserTier         string    `json:"user_tier,omitempty"`
	InputTokens      int64     `json:"input_tokens,omitempty"`
	OutputTokens     int64     `json:"output_tokens,omitempty"`
	CacheReadTokens  int64     `json:"cache_read_tokens,omitempty"`
	CacheWriteTokens int64     `json:"cache_write_tokens,omitempty"`
	SystemTokens     int64     `json:"system_tokens,omitempty"`
	LatencyMs        int64     `json:"latency_ms,omitempty"`
	Streamed         bool      `json:"streamed,omitempty"`
}

var (
	providers = []string{"openai", "anthropic", "google", "bedrock"}
	models    = map[string][]string{
		"openai":    {"gpt-4o", "gpt-4o-mini", "o3"},
		"anthropic": {"claude-sonnet-4", "claude-opus-4", "claude-haiku-3.5"},
		"google":    {"gemini-2.5-pro", "gemini-2.5-flash"},
		"bedrock":   {"anthropic.claude-sonnet-4", "meta.llama3-70b"},
	}
	operations = []string{"", "chat", "text_completion", "embeddings"}
	scenarios  = []string{"", "chat", "summarize", "code"}
	tiers      = []string{"", "free", "pro", "enterprise"}
	errorCodes = []string{"rate_limited", "context_length_exceeded", "upstream_timeout"}
)

// generator makes a realistic, deterministic mix of events: the same seed gives the same
// events (apart from occurred_at, which is the time of generation).
type generator struct {
	rng *rand.Rand
}

func newGenerator(seed uint64) *generator {
	return &generator{rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))}
}

func (g *generator) pick(values []string) string { return values[g.rng.IntN(len(values))] }

// lognormal returns exp(N(mu, sigma)) as a whole number, capped at limit.
func (g *generator) lognormal(mu, sigma float64, limit int64) int64 {
	return min(int64(math.Exp(mu+sigma*g.rng.NormFloat64())), limit)
}

// uuid formats 16 random bytes as a version 4 UUID. A gateway would use a real UUID or ULID
// library; this one draws from the seeded generator so that a run can be repeated exactly.
func (g *generator) uuid() string {
	hi, lo := g.rng.Uint64(), g.rng.Uint64()
	hi = hi&^0xf000 | 0x4000                        // version 4
	lo = lo&^(0xc<<60) | 0x8<<60                    // RFC 4122 variant
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", // 8-4-4-4-12
		hi>>32, hi>>16&0xffff, hi&0xffff, lo>>48, lo&0xffffffffffff)
}

func (g *generator) next(now time.Time) UsageEvent {
	provider := g.pick(providers)
	model := g.pick(models[provider])
	e := UsageEvent{
		SchemaVersion: 1,
		EventID:       g.uuid(),
		// UTC and at most microseconds: the form the consumer's fast path parses.
		OccurredAt:   now.UTC().Truncate(time.Microsecond),
		Provider:     provider,
		ProviderUUID: "prov-" + provider,
		Model:        model,
		Scenario:     g.pick(scenarios),
		UserTier:     g.pick(tiers),
		Streamed:     g.rng.Float64() < 0.6,
		LatencyMs:    g.lognormal(7.3, 1.0, 3_600_000),
	}
	if g.rng.Float64() < 0.2 {
		e.RequestModel = model + "-latest"
	}
	switch roll := g.rng.Float64(); {
	case roll < 0.93:
		e.Status = "success"
		e.InputTokens = g.lognormal(6.5, 1.2, 2_000_000)
		e.OutputTokens = g.lognormal(5.0, 1.0, 200_000)
	case roll < 0.98:
		e.Status = "error"
		e.ErrorCode = g.pick(errorCodes)
	default:
		e.Status = "canceled"
		e.InputTokens = g.lognormal(6.5, 1.2, 2_000_000)
	}
	if g.rng.Float64() < 0.3 {
		e.CacheReadTokens = g.lognormal(7, 1, 1_000_000)
	}
	if g.rng.Float64() < 0.1 {
		e.CacheWriteTokens = min(g.lognormal(6, 1, 1_000_000), e.InputTokens) // part of input
	}
	e.Operation = g.pick(operations)
	return e
}
