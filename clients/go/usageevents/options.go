package usageevents

// UsageOptions holds what one LLM gateway request consumed: the gateway tracker's UsageOptions,
// field for field (its GenAI-conventions version, with CacheReadTokens and CacheWriteTokens).
//
// Provider, Model and Status are required. Labels (strings) must not contain control characters
// and are limited in length (code points): Provider, ProviderUUID, RuleUUID, Scenario, UserTier
// and Operation 128; Model and RequestModel 256. Token counts are 0 to 10,000,000 and LatencyMs
// 0 to 86,400,000. An event that breaks these rules would be rejected by the consumer, so
// [Publisher.RecordUsage] drops it at once as [DropInvalid].
type UsageOptions struct {
	// Operation is the GenAI operation (gen_ai.operation.name), e.g. "chat",
	// "text_completion", "embeddings"; empty means "chat".
	Operation string

	// Provider is the name of the LLM provider (e.g., "openai", "anthropic").
	Provider string

	// ProviderUUID is the unique identifier of the provider.
	ProviderUUID string

	// Model is the actual model used (not the requested model).
	Model string

	// RequestModel is the original model name requested by the user.
	RequestModel string

	// RuleUUID is the load balancer rule UUID.
	RuleUUID string

	// Scenario is the API scenario (e.g., "openai", "anthropic", "claude_code").
	Scenario string

	// InputTokens is the number of input/prompt tokens consumed (excluding cache reads).
	InputTokens int

	// OutputTokens is the number of output/completion tokens consumed.
	OutputTokens int

	// CacheReadTokens is the number of input tokens served from the prompt cache (the seed
	// tracker's CacheInputTokens).
	CacheReadTokens int

	// CacheWriteTokens is the number of input tokens written to the prompt cache; they are
	// already counted in InputTokens.
	CacheWriteTokens int

	// SystemTokens represents tokens consumed by system-level operations.
	SystemTokens int

	// Streamed indicates whether this was a streaming request.
	Streamed bool

	// Status is the request status: "success", "error", or "canceled".
	Status string

	// ErrorCode is the error code if status is not "success". It is cut to at most
	// [MaxErrorCodeBytes] bytes (never inside a UTF-8 character), as the tracker cuts it: no
	// metric of the consumer holds more of it.
	ErrorCode string

	// LatencyMs is the request processing time in milliseconds.
	LatencyMs int

	// UserTier is a low-cardinality class for enterprise observability.
	UserTier string
}
