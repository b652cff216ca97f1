package usageevents

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// vectorsDir holds the cross-language test vectors (schemas/vectors/README.md).
var vectorsDir = filepath.Join("..", "..", "..", "schemas", "vectors")

type vectorFile struct {
	EventID    string       `json:"event_id"`
	OccurredAt string       `json:"occurred_at"`
	Cases      []vectorCase `json:"cases"`
}

type vectorCase struct {
	Name    string        `json:"name"`
	Options *UsageOptions `json:"options"` // absent in raw reject cases
	Value   string        `json:"value"`
	Key     string        `json:"key"`    // accept cases
	Reason  string        `json:"reason"` // reject cases
}

func loadVectors(t testing.TB, name string) vectorFile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectorsDir, name))
	if err != nil {
		t.Fatal(err)
	}
	var f vectorFile
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(f.Cases) == 0 {
		t.Fatalf("%s holds no cases", name)
	}
	return f
}

// fixed returns the event id and clock functions of a vector file.
func (f vectorFile) fixed(t testing.TB) (func([]byte) []byte, func() time.Time) {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, f.OccurredAt)
	if err != nil {
		t.Fatal(err)
	}
	id := f.EventID
	return func(b []byte) []byte { return append(b, id...) }, func() time.Time { return at }
}

// encode is what RecordUsage writes for o, with the given id and time.
func encode(o UsageOptions, id func([]byte) []byte, at time.Time) string {
	o.normalize()
	value, _, _ := appendEvent(nil, &o, id, at)
	return string(value)
}

func TestAcceptVectors(t *testing.T) {
	f := loadVectors(t, "accept.json")
	id, now := f.fixed(t)
	for _, c := range f.Cases {
		t.Run(c.Name, func(t *testing.T) {
			if c.Options == nil {
				t.Fatal("an accept case needs options")
			}
			o := *c.Options
			o.normalize()
			if err := o.validate(); err != nil {
				t.Fatalf("validate: %v", err)
			}
			if got := encode(*c.Options, id, now()); got != c.Value {
				t.Errorf("value\n got %s\nwant %s", got, c.Value)
			}
			key, _ := attributeKey(nil, &o)
			if string(key[:]) != c.Key {
				t.Errorf("key = %s, want %s", key[:], c.Key)
			}
		})
	}
}

func TestRejectVectorsWithOptionsAreDropped(t *testing.T) {
	f := loadVectors(t, "reject.json")
	id, now := f.fixed(t)
	withOptions := 0
	for _, c := range f.Cases {
		if c.Options == nil {
			continue // raw bytes no UsageOptions can produce
		}
		withOptions++
		t.Run(c.Name, func(t *testing.T) {
			// What the publisher would write, were it not to check: the bytes the worker rejects.
			if got := encode(*c.Options, id, now()); got != c.Value {
				t.Errorf("value\n got %s\nwant %s", got, c.Value)
			}
			o := *c.Options
			o.normalize()
			if err := o.validate(); err == nil {
				t.Errorf("validate accepted what the worker rejects as %s", c.Reason)
			}
		})
	}
	if withOptions == 0 {
		t.Fatal("no reject case has options")
	}
}
