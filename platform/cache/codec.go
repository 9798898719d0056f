package cache

import "encoding/json"

// Codec turns a cached value into the bytes stored in Redis and back.
type Codec[V any] interface {
	Marshal(V) ([]byte, error)
	Unmarshal([]byte) (V, error)
}

// JSON is a Codec that stores values as encoding/json documents.
type JSON[V any] struct{}

// Marshal encodes v as JSON.
func (JSON[V]) Marshal(v V) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes a JSON document into a new V.
func (JSON[V]) Unmarshal(b []byte) (V, error) {
	var v V
	err := json.Unmarshal(b, &v)
	return v, err
}

// Raw is a Codec for values that are already bytes (pre-rendered JSON, protobuf),
// stored as they are.
type Raw struct{}

// Marshal returns b unchanged; the cache never modifies it.
func (Raw) Marshal(b []byte) ([]byte, error) { return b, nil }

// Unmarshal returns b unchanged; Redis replies are fresh buffers, so nothing
// else holds them.
func (Raw) Unmarshal(b []byte) ([]byte, error) { return b, nil }
