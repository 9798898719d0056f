package config

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
)

// Store holds the current configuration and applies live changes to it.
// Readers call Get on every use; it is one atomic load.
type Store struct {
	src     Sources
	log     *slog.Logger
	cur     atomic.Pointer[Config]
	initial loaded

	mu        sync.Mutex // serialises reloads and subscriber changes
	listeners []func(*Config)

	changes *prometheus.CounterVec
	reloads *prometheus.CounterVec
}

// Load evaluates every layer once and returns a store holding the result.
func Load(src Sources, log *slog.Logger) (*Store, error) {
	l, err := load(src)
	if err != nil {
		return nil, err
	}
	s := &Store{
		src:     src,
		log:     log,
		initial: l,
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mercato_config_changes_total",
			Help: "Live configuration keys changed without a restart, by key.",
		}, []string{"key"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mercato_config_reloads_total",
			Help: "Configuration reloads, by result.",
		}, []string{"result"}),
	}
	cfg := l.cfg
	s.cur.Store(&cfg)
	return s, nil
}

// Static returns a store that never reloads, for tests and tools.
func Static(cfg Config) *Store {
	s := &Store{log: slog.New(slog.DiscardHandler)}
	s.changes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mercato_config_changes_total"}, []string{"key"})
	s.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mercato_config_reloads_total"}, []string{"result"})
	s.cur.Store(&cfg)
	return s
}

// Get returns the current configuration. Callers must not modify it.
func (s *Store) Get() *Config { return s.cur.Load() }

// Explicit reports whether a layer above the defaults set key.
func (s *Store) Explicit(key string) bool {
	return s.initial.explicit != nil && s.initial.explicit.Exists(key)
}

// OnChange registers fn to run after every applied live change.
func (s *Store) OnChange(fn func(*Config)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listeners = append(s.listeners, fn)
}

// Collectors returns the store's metrics for registration.
func (s *Store) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.changes, s.reloads}
}

// Set replaces live keys from cfg as a reload would; it exists for tests that
// change live settings without writing a file.
func (s *Store) Set(cfg Config) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apply(cfg)
}

// Reload evaluates every layer again and applies the live keys that changed.
// Non-live keys that changed are logged and keep their old value.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := load(s.src)
	if err != nil {
		s.reloads.WithLabelValues("error").Inc()
		s.log.Error("config reload rejected; keeping the current configuration", "err", err)
		return err
	}
	s.reloads.WithLabelValues("ok").Inc()
	s.apply(l.cfg)
	return nil
}

func (s *Store) apply(next Config) []string {
	old := s.cur.Load()
	merged := *old
	var changed []string
	mergeLive(reflect.ValueOf(&merged).Elem(), reflect.ValueOf(next), reflect.ValueOf(*old), "", false, func(key string, live bool, from, to any) {
		if !live {
			s.log.Warn("config key changed; it takes effect at the next restart", "key", key)
			return
		}
		changed = append(changed, key)
		s.changes.WithLabelValues(key).Inc()
		s.log.Info("config key changed live", "key", key, "old", from, "new", to)
	})
	if len(changed) == 0 {
		return nil
	}
	s.cur.Store(&merged)
	for _, fn := range s.listeners {
		fn(&merged)
	}
	return changed
}

// mergeLive copies live fields from next into dst and reports every field
// whose value differs between old and next.
func mergeLive(dst, next, old reflect.Value, path string, live bool, report func(key string, live bool, from, to any)) {
	t := next.Type()
	if t.Kind() == reflect.Struct && t != reflect.TypeOf(time.Duration(0)) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			key := f.Tag.Get("koanf")
			if path != "" {
				key = path + "." + key
			}
			mergeLive(dst.Field(i), next.Field(i), old.Field(i), key, live || f.Tag.Get("live") == "true", report)
		}
		return
	}
	if reflect.DeepEqual(next.Interface(), old.Interface()) {
		return
	}
	report(path, live, old.Interface(), next.Interface())
	if live {
		dst.Set(next)
	}
}

// Watch reloads whenever mercato.yaml or the live overlay changes, until ctx
// ends. It watches the directories so that files created later, replaced by
// an editor's rename, or swapped by a Kubernetes ConfigMap update are seen.
func (s *Store) Watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("config watch: %w", err)
	}
	defer w.Close()
	watched := map[string]bool{}
	for _, f := range []string{s.src.File, s.src.LiveFile} {
		if f == "" {
			continue
		}
		abs, err := filepath.Abs(f)
		if err != nil {
			return err
		}
		dir := filepath.Dir(abs)
		if !watched[dir] {
			if err := w.Add(dir); err != nil {
				s.log.Warn("config directory not watched", "dir", dir, "err", err)
				continue
			}
			watched[dir] = true
		}
	}
	if len(watched) == 0 {
		<-ctx.Done()
		return nil
	}
	// Editors and ConfigMaps write in several steps; settle before reloading.
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if s.concerns(ev.Name) {
				debounce = time.After(100 * time.Millisecond)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			s.log.Warn("config watch error", "err", err)
		case <-debounce:
			debounce = nil
			_ = s.Reload()
		}
	}
}

func (s *Store) concerns(name string) bool {
	base := filepath.Base(name)
	for _, f := range []string{s.src.File, s.src.LiveFile} {
		if f != "" && (base == filepath.Base(f) || base == "..data") {
			return true
		}
	}
	return false
}
