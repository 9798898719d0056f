package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Scenario is one named workload of `mercato load`: its own unmeasured
// setup followed by one or more measured cases.
type Scenario interface {
	// Name is the word that selects the scenario on the command line.
	Name() string
	// Run sets up and drives every case in turn. It returns the results of
	// the cases that finished, even when it also returns an error.
	Run(ctx context.Context, opts Options) ([]Result, error)
}

// scenarios is the table of every scenario, in the order Names lists them;
// a new scenario is added here rather than registering itself.
func scenarios() []Scenario {
	return []Scenario{
		browse{},
		auth{},
		flashSale{},
	}
}

// Names lists the scenarios Lookup knows.
func Names() []string {
	var names []string
	for _, s := range scenarios() {
		names = append(names, s.Name())
	}
	return names
}

// Lookup returns the scenario called name.
func Lookup(name string) (Scenario, error) {
	for _, s := range scenarios() {
		if s.Name() == name {
			return s, nil
		}
	}
	return nil, fmt.Errorf("unknown load scenario %q (known: %s)", name, strings.Join(Names(), ", "))
}

// Run runs the scenario called name and writes one JSON line per finished
// case to opts.Out, also when a later case fails.
func Run(ctx context.Context, name string, opts Options) ([]Result, error) {
	s, err := Lookup(name)
	if err != nil {
		return nil, err
	}
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	results, runErr := s.Run(ctx, opts)
	enc := json.NewEncoder(opts.Out)
	for _, r := range results {
		if err := enc.Encode(r); err != nil {
			return results, errors.Join(runErr, fmt.Errorf("write result: %w", err))
		}
	}
	if runErr != nil {
		return results, fmt.Errorf("load %s: %w", name, runErr)
	}
	return results, nil
}
