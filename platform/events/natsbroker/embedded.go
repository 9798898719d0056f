package natsbroker

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// StartEmbedded runs a NATS server with JetStream inside this process, for
// `mercato up`: it stores streams under dir (which survives restarts, so
// nothing published is lost), listens on a free loopback port (never the
// standard 4222, which may belong to a real server) and joins no cluster.
// It returns the client URL and a function that stops the server.
func StartEmbedded(dir string, log *slog.Logger) (url string, shutdown func(), err error) {
	return startEmbedded(dir, server.RANDOM_PORT, log)
}

// startEmbedded is StartEmbedded on a chosen port; tests restart a server on
// the port its clients know.
func startEmbedded(dir string, port int, log *slog.Logger) (string, func(), error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", nil, fmt.Errorf("embedded nats: store dir: %w", err)
	}
	s, err := server.NewServer(&server.Options{
		ServerName: "mercato-embedded",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		// The process owns signal handling; the server must not exit it.
		NoSigs: true,
	})
	if err != nil {
		return "", nil, fmt.Errorf("embedded nats: %w", err)
	}
	s.SetLoggerV2(serverLog{log.With("component", "nats-server")}, false, false, false)
	s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		s.WaitForShutdown()
		return "", nil, fmt.Errorf("embedded nats: not ready after 30s (store %s)", dir)
	}
	return s.ClientURL(), func() {
		s.Shutdown()
		s.WaitForShutdown()
	}, nil
}

// serverLog sends the embedded server's log to slog; its notices (a banner
// and start-up chatter) go to debug. Fatal messages are
// logged as errors: the server reports them and shuts itself down, and the
// process decides what happens next.
type serverLog struct{ log *slog.Logger }

func (l serverLog) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l serverLog) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l serverLog) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLog) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLog) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l serverLog) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
