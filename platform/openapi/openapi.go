// Package openapi reads the OpenAPI fragments services keep beside their
// handlers and assembles them into the one public document the gateway
// serves. The operations of a fragment are also Go ServeMux patterns, so the
// document, the gateway's routes and each service's routes can be checked
// against each other.
package openapi

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Operation is one public API operation a service serves.
type Operation struct {
	Method string
	Path   string // OpenAPI path template, which is also a Go ServeMux pattern
	// Security is the operation's OpenAPI security: alternatives, any one of
	// which admits a caller. It is the operation's own security, else the
	// fragment's top-level one, else nil. Nil, an empty list and a list
	// holding an empty requirement ({}) all admit anonymous callers.
	Security []SecurityRequirement
}

// SecurityRequirement is one alternative of an OpenAPI security list: every
// named security scheme must be satisfied, with the scopes listed for it.
// {bearer: [admin]} needs a bearer token with the admin scope; {} needs
// nothing.
type SecurityRequirement map[string][]string

// Pattern is the ServeMux pattern of the operation.
func (o Operation) Pattern() string { return o.Method + " " + o.Path }

// Public reports whether the operation declares that it takes no
// credential at all (an explicit `security: []`): signing up, logging in,
// exchanging a refresh token. The gateway then leaves any Authorization
// header unexamined, so a client that sends a stale access token along can
// still refresh it.
func (o Operation) Public() bool { return o.Security != nil && len(o.Security) == 0 }

// Anonymous reports whether the operation admits callers without any
// credential.
func (o Operation) Anonymous() bool {
	if len(o.Security) == 0 {
		return true
	}
	for _, req := range o.Security {
		if len(req) == 0 {
			return true
		}
	}
	return false
}

var methods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// Fragment is one service's part of the OpenAPI document.
type Fragment struct {
	doc map[string]any
	ops []Operation
}

// Common is the fragment of components every service shares (Problem,
// Money, paging parameters, common responses).
//
//go:embed common.yaml
var Common []byte

// ParseFragment reads a service's OpenAPI YAML (or JSON) fragment.
func ParseFragment(raw []byte) (*Fragment, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("openapi fragment: %w", err)
	}
	doc, _ = stringKeys(doc).(map[string]any)
	if _, ok := doc["paths"].(map[string]any); !ok {
		return nil, fmt.Errorf("openapi fragment has no paths")
	}
	ops, err := operations(doc)
	if err != nil {
		return nil, fmt.Errorf("openapi fragment: %w", err)
	}
	return &Fragment{doc: doc, ops: ops}, nil
}

// stringKeys turns the map[any]any that YAML makes of a mapping with
// non-string keys (an unquoted response code such as 200:) into
// map[string]any, which JSON can encode.
func stringKeys(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = stringKeys(e)
		}
		return v
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[fmt.Sprint(k)] = stringKeys(e)
		}
		return m
	case []any:
		for i, e := range v {
			v[i] = stringKeys(e)
		}
		return v
	default:
		return v
	}
}

// Operations lists the fragment's operations, sorted.
func (f *Fragment) Operations() []Operation {
	ops := make([]Operation, len(f.ops))
	for i, op := range f.ops {
		// A copy: callers may not change the fragment through it.
		if op.Security != nil {
			sec := make([]SecurityRequirement, len(op.Security))
			for j, req := range op.Security {
				sec[j] = maps.Clone(req)
				for scheme, scopes := range sec[j] {
					sec[j][scheme] = slices.Clone(scopes)
				}
			}
			op.Security = sec
		}
		ops[i] = op
	}
	return ops
}

// SecuritySchemes lists, sorted, the names of the security schemes the
// fragment declares under components.securitySchemes.
func (f *Fragment) SecuritySchemes() []string {
	comps, _ := f.doc["components"].(map[string]any)
	schemes, _ := comps["securitySchemes"].(map[string]any)
	names := make([]string, 0, len(schemes))
	for name := range schemes {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// operations reads the operations of a fragment's paths, each with the
// security that applies to it.
func operations(doc map[string]any) ([]Operation, error) {
	var fallback []SecurityRequirement
	if raw, ok := doc["security"]; ok {
		var err error
		if fallback, err = security(raw); err != nil {
			return nil, fmt.Errorf("security: %w", err)
		}
	}
	var ops []Operation
	for path, item := range doc["paths"].(map[string]any) {
		m, _ := item.(map[string]any)
		for _, method := range methods {
			raw, ok := m[method]
			if !ok {
				continue
			}
			op := Operation{Method: strings.ToUpper(method), Path: path, Security: fallback}
			if spec, _ := raw.(map[string]any); spec != nil {
				if sec, ok := spec["security"]; ok {
					reqs, err := security(sec)
					if err != nil {
						return nil, fmt.Errorf("%s %s security: %w", op.Method, path, err)
					}
					// An operation's own list replaces the top-level one,
					// even when empty.
					if reqs == nil {
						reqs = []SecurityRequirement{}
					}
					op.Security = reqs
				}
			}
			ops = append(ops, op)
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].Pattern() < ops[j].Pattern() })
	return ops, nil
}

// security reads an OpenAPI security list: a list of mappings from scheme
// name to a list of scope names. Anything else is an error, since the
// gateway enforces what it says.
func security(raw any) ([]SecurityRequirement, error) {
	list, ok := raw.([]any)
	if !ok {
		if raw == nil {
			return nil, nil
		}
		return nil, fmt.Errorf("want a list of requirements, got %T", raw)
	}
	reqs := make([]SecurityRequirement, 0, len(list))
	for i, item := range list {
		m, ok := item.(map[string]any)
		if !ok && item != nil {
			return nil, fmt.Errorf("requirement %d: want a mapping of scheme to scopes, got %T", i, item)
		}
		req := SecurityRequirement{}
		for scheme, rawScopes := range m {
			scopes, ok := rawScopes.([]any)
			if !ok && rawScopes != nil {
				return nil, fmt.Errorf("requirement %d: scopes of %s: want a list, got %T", i, scheme, rawScopes)
			}
			names := make([]string, 0, len(scopes))
			for _, s := range scopes {
				name, ok := s.(string)
				if !ok || name == "" {
					return nil, fmt.Errorf("requirement %d: scopes of %s: %v is not a scope name", i, scheme, s)
				}
				names = append(names, name)
			}
			req[scheme] = names
		}
		reqs = append(reqs, req)
	}
	return reqs, nil
}

// Assemble merges service fragments into one OpenAPI 3.1 document. Two
// services describing the same path, or the same component name with
// different content, is an error: the document must be unambiguous.
//
// base holds the components every service shares; its paths are ignored.
func Assemble(publicURL string, base *Fragment, fragments map[string]*Fragment) ([]byte, error) {
	paths := map[string]any{}
	components := map[string]map[string]any{}
	owners := map[string]string{}
	names := make([]string, 0, len(fragments))
	for name := range fragments {
		names = append(names, name)
	}
	sort.Strings(names)
	tags := []any{} // an array even without services, as OpenAPI requires
	all := append([]string{""}, names...)
	for _, name := range all {
		f := base
		if name != "" {
			f = fragments[name]
			tags = append(tags, map[string]any{"name": name})
		}
		if name != "" {
			for path, item := range f.doc["paths"].(map[string]any) {
				if other, dup := owners[path]; dup {
					return nil, fmt.Errorf("path %s is described by both %s and %s", path, other, name)
				}
				owners[path] = name
				paths[path] = tagOperations(item, name)
			}
		}
		comps, _ := f.doc["components"].(map[string]any)
		for kind, entries := range comps {
			em, _ := entries.(map[string]any)
			if components[kind] == nil {
				components[kind] = map[string]any{}
			}
			for key, val := range em {
				if prev, dup := components[kind][key]; dup {
					a, _ := json.Marshal(prev)
					b, _ := json.Marshal(val)
					if string(a) != string(b) {
						return nil, fmt.Errorf("component %s/%s differs between services (second: %s)", kind, key, name)
					}
				}
				components[kind][key] = val
			}
		}
	}
	doc := map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":       "Mercato API",
			"version":     "1.0.0",
			"description": "The public REST API of Mercato, served by its gateway. Errors are application/problem+json (RFC 9457); money is integer minor units with an ISO 4217 currency.",
		},
		"servers":    []any{map[string]any{"url": publicURL}},
		"tags":       tags,
		"paths":      paths,
		"components": components,
	}
	return json.MarshalIndent(doc, "", "  ")
}

// tagOperations labels each operation of a path item with its service.
func tagOperations(item any, service string) any {
	m, ok := item.(map[string]any)
	if !ok {
		return item
	}
	for _, method := range methods {
		if op, ok := m[method].(map[string]any); ok {
			if _, has := op["tags"]; !has {
				op["tags"] = []any{service}
			}
		}
	}
	return m
}
