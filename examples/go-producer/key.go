package main

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// attributeKey is the message key of an event: a stable hash of the labels every metrics
// profile has, so that every attribute set lands on one partition and each worker of a group
// holds only its share of the series (docs/producing.md, "The message key"). The definition is
// the consumer's (consumer/keys/attributes.py) and must stay byte for byte the same: model,
// provider, provider_uuid, request_model, rule_uuid, scenario, streamed (true/false),
// user_tier, joined with U+001F, SHA-256, the first 16 bytes as 32 lowercase hex digits.
func attributeKey(e *UsageEvent) []byte {
	streamed := "false"
	if e.Streamed {
		streamed = "true"
	}
	fields := []string{
		e.Model,
		e.Provider,
		e.ProviderUUID,
		e.RequestModel,
		e.RuleUUID,
		e.Scenario,
		streamed,
		e.UserTier,
	}
	sum := sha256.Sum256([]byte(strings.Join(fields, "\x1f")))
	return []byte(hex.EncodeToString(sum[:16]))
}
