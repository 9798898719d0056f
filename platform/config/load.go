package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
)

// EnvPrefix starts every environment variable Mercato reads.
const EnvPrefix = "MERCATO_"

// envAliases are the documented short environment names. Any other key can be
// set as MERCATO_SECTION__KEY, e.g. MERCATO_CATALOG__CACHE_TTL=5m.
var envAliases = map[string]string{
	"NAMESPACE":         "namespace",
	"PUBLIC_URL":        "public_url",
	"LOG_LEVEL":         "log.level",
	"LOG_FORMAT":        "log.format",
	"OTLP_ENDPOINT":     "telemetry.otlp_endpoint",
	"POSTGRES_URL":      "postgres.url",
	"REDIS_URL":         "redis.url",
	"BROKER_URL":        "broker.url",
	"NATS_URL":          "broker.nats_url",
	"ADMIN_EMAIL":       "identity.admin_email",
	"ADMIN_PASSWORD":    "identity.admin_password",
	"RATE_LIMIT_PER_IP": "gateway.rate_limit_per_ip",
}

// Sources names where the layers above the defaults come from.
type Sources struct {
	// File is mercato.yaml; a missing file is an empty layer.
	File string
	// LiveFile is the live overlay, read last and watched; a missing file is an
	// empty layer.
	LiveFile string
	// Environ is the process environment as KEY=VALUE pairs.
	Environ []string
	// Overrides are values set by command-line flags, keyed by config path;
	// they sit between the environment and the live overlay.
	Overrides map[string]any
}

// DefaultSources reads MERCATO_CONFIG (default mercato.yaml) and
// MERCATO_LIVE_CONFIG from the environment.
func DefaultSources() Sources {
	s := Sources{File: "mercato.yaml", LiveFile: os.Getenv(EnvPrefix + "LIVE_CONFIG"), Environ: os.Environ()}
	if f := os.Getenv(EnvPrefix + "CONFIG"); f != "" {
		s.File = f
	}
	return s
}

// loaded is one evaluation of every layer.
type loaded struct {
	cfg Config
	// explicit holds every key set by a layer above the defaults.
	explicit *koanf.Koanf
}

func load(src Sources) (loaded, error) {
	k := koanf.New(".")
	if err := loadYAML(k, src.File); err != nil {
		return loaded{}, err
	}
	env, err := envLayer(src.Environ)
	if err != nil {
		return loaded{}, err
	}
	if err := k.Load(confmap.Provider(env, "."), nil); err != nil {
		return loaded{}, fmt.Errorf("environment: %w", err)
	}
	if len(src.Overrides) > 0 {
		if err := k.Load(confmap.Provider(src.Overrides, "."), nil); err != nil {
			return loaded{}, fmt.Errorf("flags: %w", err)
		}
	}
	if err := loadYAML(k, src.LiveFile); err != nil {
		return loaded{}, err
	}
	cfg := Defaults()
	dc := &mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		),
		WeaklyTypedInput: true,
		ErrorUnused:      true,
		TagName:          "koanf",
	}
	if err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{DecoderConfig: dc}); err != nil {
		return loaded{}, fmt.Errorf("configuration: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return loaded{}, err
	}
	return loaded{cfg: cfg, explicit: k}, nil
}

func loadYAML(k *koanf.Koanf, path string) error {
	if path == "" {
		return nil
	}
	err := k.Load(file.Provider(path), yaml.Parser())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// envLayer turns MERCATO_* variables into config paths.
func envLayer(environ []string) (map[string]any, error) {
	out := map[string]any{}
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		rest := strings.TrimPrefix(name, EnvPrefix)
		if key, ok := envAliases[rest]; ok {
			out[key] = value
			continue
		}
		if !strings.Contains(rest, "__") {
			continue // not a config key (MERCATO_CONFIG and friends)
		}
		out[strings.ToLower(strings.ReplaceAll(rest, "__", "."))] = value
	}
	return out, nil
}
