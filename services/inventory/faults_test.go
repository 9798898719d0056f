package inventory

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/redis/go-redis/v9"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/platformtest"
	inventoryv1 "github.com/mercato/mercato/proto/gen/mercato/inventory/v1"
	"github.com/mercato/mercato/proto/gen/mercato/inventory/v1/inventoryv1connect"
)

// TestRedisRestartMidSaleNeverOversells kills Redis while 2,000 buyers
// reserve and commit one unit each of 100, and starts it again empty:
// reservations that had not reached the ledger are lost (their commit is
// told not found), but no unit is sold twice, every sale is in the ledger
// once, and the counters are rebuilt to agree with it.
func TestRedisRestartMidSaleNeverOversells(t *testing.T) {
	srv := startRedis(t)
	h := newHarness(t, func(c *config.Config) { c.Redis.URL = srv.url() })
	in := h.start()
	variant := newVariant()
	h.setStock(in, variant, 100)
	epoch := h.epoch()

	const buyers = 2000
	var held, committed, lost, out, finished atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, buyers)
	start, midway := make(chan struct{}), make(chan struct{})
	for i := range buyers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer finished.Add(1)
			<-start
			// Redis may be down or rebuilding for longer than
			// reserveRetrying waits under this load.
			r, err := retryUnavailable(func() (*inventoryv1.Reservation, error) {
				return reserve(context.Background(), in, variant, 1, key("buyer", i), "")
			})
			var oos inventoryv1.OutOfStock
			switch {
			case outOfStock(err, &oos):
				out.Add(1)
				return
			case err != nil:
				errs <- fmt.Errorf("reserve: %w", err)
				return
			}
			if held.Add(1) == 30 {
				close(midway)
			}
			_, err = retryUnavailable(func() (*inventoryv1.Reservation, error) { return commitReservation(in, r.GetId()) })
			switch {
			case err == nil:
				committed.Add(1)
			case connect.CodeOf(err) == connect.CodeNotFound:
				lost.Add(1)
			default:
				errs <- fmt.Errorf("commit %s: %w", r.GetId(), err)
			}
		}()
	}
	close(start)
	select {
	case <-midway:
	case <-time.After(time.Minute):
		t.Fatal("30 reservations did not succeed within a minute")
	}
	srv.kill()
	t.Logf("redis killed after %d reservations, with %d buyers done", held.Load(), finished.Load())
	srv.start()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d held, %d committed, %d lost with redis, %d out of stock", held.Load(), committed.Load(), lost.Load(), out.Load())

	if committed.Load() > 100 {
		t.Fatalf("%d commits succeeded for 100 units", committed.Load())
	}
	if committed.Load()+lost.Load() != held.Load() {
		t.Fatalf("%d reservations held but %d committed and %d lost", held.Load(), committed.Load(), lost.Load())
	}
	units := h.count(`SELECT coalesce(sum(committed_delta), 0) FROM ledger WHERE variant_id = $1`, variant)
	commits := h.count(`SELECT count(*) FROM ledger WHERE variant_id = $1 AND op = 'commit'`, variant)
	sold := h.count(`SELECT count(*) FROM reservations r JOIN reservation_items i ON i.reservation_id = r.id
		WHERE i.variant_id = $1 AND r.status = 'committed'`, variant)
	if units != committed.Load() || commits != committed.Load() || sold != committed.Load() {
		t.Fatalf("%d commits succeeded but the ledger holds %d committed units in %d commits and %d committed reservations",
			committed.Load(), units, commits, sold)
	}
	if c := h.agree(variant); c.OnHand != 100 || c.Committed != committed.Load() || c.Reserved != 0 {
		t.Fatalf("after the sale: %+v; want 100 on hand, %d committed, none reserved", c, committed.Load())
	}
	h.rebuiltSince(epoch)
}

// TestRedisAnsweringFromAnOldStateIsRebuilt restarts Redis from a snapshot
// taken before the last reservations, as a failover to a lagging replica
// or a restart from an old save would: its epoch key is there, but it was
// written before the restart, so the service must not answer from that
// state. Buyers waiting at the door as it comes back — among them retries
// of the reservations it forgot — get what the ledger says: the same
// reservation for a retried key, and only the units left.
func TestRedisAnsweringFromAnOldStateIsRebuilt(t *testing.T) {
	srv := startRedis(t)
	h := newHarness(t, func(c *config.Config) { c.Redis.URL = srv.url() })
	in := h.start()
	variant := newVariant()
	h.setStock(in, variant, 20)
	ctx := context.Background()

	reserveAll(t, in, variant, "early", 5)
	h.caughtUp()
	if err := h.rdb.Save(ctx).Err(); err != nil {
		t.Fatalf("save the old state: %v", err)
	}
	late := reserveAll(t, in, variant, "late", 5)
	h.caughtUp()
	epoch := h.epoch()

	srv.kill()
	var wg sync.WaitGroup
	var got, out atomic.Int64
	errs := make(chan error, 20)
	for i := range 15 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := reserveRetrying(ctx, in, variant, 1, key("after", i), "")
			var oos inventoryv1.OutOfStock
			switch {
			case err == nil:
				got.Add(1)
			case outOfStock(err, &oos):
				out.Add(1)
			default:
				errs <- fmt.Errorf("reserve after the restart: %w", err)
			}
		}()
	}
	for i, id := range late {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := reserveRetrying(ctx, in, variant, 1, key("late", i), "")
			switch {
			case err != nil:
				errs <- fmt.Errorf("retry of %s: %w", key("late", i), err)
			case r.GetId() != id:
				errs <- fmt.Errorf("retry of %s made %s; it had made %s", key("late", i), r.GetId(), id)
			}
		}()
	}
	srv.start()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got.Load() != 10 || out.Load() != 5 {
		t.Errorf("after the restart %d buyers got a unit and %d were told out of stock; want 10 and 5", got.Load(), out.Load())
	}

	platformtest.Eventually(t, "the counters were rebuilt from the ledger", func() bool {
		st, err := h.hot.State(ctx)
		e, eerr := h.ledger.Epoch(ctx)
		return err == nil && eerr == nil && e > epoch && st.Whole(e)
	})
	c := h.agree(variant)
	if c.OnHand != 20 || c.Reserved != 20 || c.Committed != 0 {
		t.Errorf("after the restart: %+v; want 20 on hand, all reserved", c)
	}
	if n := h.count(`SELECT count(*) FROM (SELECT FROM reservations GROUP BY idempotency_key HAVING count(*) > 1) AS twice`); n > 0 {
		t.Errorf("%d idempotency keys made more than one reservation in the ledger", n)
	}
	if entries := h.count(`SELECT count(*) FROM ledger WHERE variant_id = $1 AND op = 'reservation'`, variant); entries != 20 {
		t.Errorf("the ledger records %d reservations of %s; want 20", entries, variant)
	}
}

// TestKilledProcessLosesNothing kills the inventory process with SIGKILL
// after it answered reservations that its ledger writer could not yet
// record, and starts another: every reservation answered OK reaches the
// ledger exactly once, including those the dead writer had read and not
// acknowledged, which the new one claims.
func TestKilledProcessLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and waits for an abandoned stream entry to be claimed")
	}
	binary := buildMercato(t)
	h := newHarness(t, func(c *config.Config) { c.Inventory.LedgerBatch = 10 })
	first := h.spawn(binary)
	h.openLedger()
	variants := []string{newVariant(), newVariant(), newVariant(), newVariant()}
	for _, v := range variants {
		h.setStock(first.instance, v, 60)
	}
	// Once it recorded the adjustments, the writer is reading the stream.
	h.caughtUp()

	// The writer waits for the epoch lock, as it would for an unreachable
	// database, while reservations go on in Redis.
	unblock := h.blockLedger()
	const units = 200
	ids := make([]string, units)
	var wg sync.WaitGroup
	errs := make(chan error, units)
	work := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				r, err := reserveRetrying(context.Background(), first.instance, variants[i%len(variants)], 1, key("unit", i), "")
				if err != nil {
					errs <- fmt.Errorf("reserve %s: %w", key("unit", i), err)
					continue
				}
				ids[i] = r.GetId()
			}
		}()
	}
	for i := range units {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	first.kill()
	if n := h.count(`SELECT count(*) FROM reservations`); n != 0 {
		t.Fatalf("the ledger had %d reservations while its writer was blocked", n)
	}
	if _, err := h.hot.State(context.Background()); err != nil {
		t.Fatal(err)
	}
	length, pending, err := h.hot.Length(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if length < units || pending == 0 || pending >= units {
		t.Fatalf("the stream holds %d entries, %d delivered to the dead writer; want the %d reservations, some but not all delivered",
			length, pending, units)
	}
	unblock()

	second := h.spawn(binary)
	platformtest.EventuallyWithin(t, 2*time.Minute, "the new process recorded every reservation", func() bool {
		return h.count(`SELECT count(*) FROM reservations`) >= units
	})
	if n := h.count(`SELECT count(*) FROM reservations WHERE id = ANY($1)`, ids); n != units {
		t.Fatalf("%d of the %d reservations answered OK are in the ledger", n, units)
	}
	for _, v := range variants {
		want := int64(units / len(variants))
		if n := h.count(`SELECT count(*) FROM ledger WHERE variant_id = $1 AND op = 'reservation'`, v); n != want {
			t.Errorf("the ledger records %d reservations of %s; want %d", n, v, want)
		}
		if n := h.count(`SELECT count(*) FROM reservation_items WHERE variant_id = $1`, v); n != want {
			t.Errorf("the ledger has %d reservation items of %s; want %d", n, v, want)
		}
		if c := h.agree(v); c.OnHand != 60 || c.Reserved != want || c.Committed != 0 {
			t.Errorf("%s after the crash: %+v; want 60 on hand and %d reserved", v, c, want)
		}
	}
	second.stop()
}

// commitReservation commits reservation id.
func commitReservation(in *instance, id string) (*inventoryv1.Reservation, error) {
	resp, err := in.client.Commit(context.Background(), connect.NewRequest(&inventoryv1.CommitRequest{ReservationId: id}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetReservation(), nil
}

// retryUnavailable calls fn again after a pause while it answers
// UNAVAILABLE, as a checkout retries with the same idempotency key or
// reservation id, for at most a minute.
func retryUnavailable[T any](fn func() (T, error)) (T, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		v, err := fn()
		if connect.CodeOf(err) != connect.CodeUnavailable || time.Now().After(deadline) {
			return v, err
		}
		time.Sleep(time.Duration(10+rand.IntN(40)) * time.Millisecond)
	}
}

// reserveAll reserves one unit of variant under each of n keys and
// returns the reservation ids in key order.
func reserveAll(t *testing.T, in *instance, variant, prefix string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		r, err := reserveRetrying(context.Background(), in, variant, 1, key(prefix, i), "")
		if err != nil {
			t.Fatalf("reserve %s: %v", key(prefix, i), err)
		}
		ids[i] = r.GetId()
	}
	return ids
}

// epoch is the generation of the Redis state the ledger last loaded.
func (h *harness) epoch() int64 {
	h.t.Helper()
	e, err := h.ledger.Epoch(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return e
}

// rebuiltSince checks that the counters were rebuilt from the ledger
// since it was at epoch, and that Redis now holds that rebuild's state.
func (h *harness) rebuiltSince(epoch int64) {
	h.t.Helper()
	now := h.epoch()
	if now <= epoch {
		h.t.Fatalf("the ledger is still at epoch %d: redis was not rebuilt", now)
	}
	st, err := h.hot.State(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	if !st.Whole(now) {
		h.t.Fatalf("redis state %+v is not whole for epoch %d", st, now)
	}
}

// count runs a query that counts something in the ledger's database.
func (h *harness) count(query string, args ...any) int64 {
	h.t.Helper()
	var n int64
	if err := h.pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// blockLedger holds the epoch lock exclusively, so that the ledger writer
// (and every other transaction that takes it) waits, until the returned
// function or the end of the test releases it.
func (h *harness) blockLedger() (unblock func()) {
	h.t.Helper()
	locked, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- h.ledger.Exclusive(context.Background(), func(context.Context) error {
			close(locked)
			<-release
			return nil
		})
	}()
	select {
	case <-locked:
	case err := <-done:
		h.t.Fatalf("take the epoch lock: %v", err)
	}
	unblock = sync.OnceFunc(func() {
		close(release)
		if err := <-done; err != nil {
			h.t.Errorf("release the epoch lock: %v", err)
		}
	})
	h.t.Cleanup(unblock)
	return unblock
}

// redisServer is a private redis-server that a test can kill and start
// again on the same port, as a crash, a restart or a failover would.
type redisServer struct {
	t    *testing.T
	addr string
	// dir holds the dump a SAVE writes, which the next start loads.
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
	out  *platformtest.Buffer
}

// startRedis starts a private redis-server on a free port, killed at the
// end of the test.
func startRedis(t *testing.T) *redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed")
	}
	r := &redisServer{t: t, addr: platformtest.ClosedAddr(t), dir: t.TempDir(), out: &platformtest.Buffer{}}
	r.start()
	t.Cleanup(func() {
		r.kill()
		if t.Failed() {
			t.Logf("redis-server output:\n%s", r.out.String())
		}
	})
	return r
}

func (r *redisServer) url() string { return "redis://" + r.addr + "/0" }

// start runs redis-server, which loads the last SAVE if there was one, and
// waits until it answers.
func (r *redisServer) start() {
	r.t.Helper()
	_, port, _ := net.SplitHostPort(r.addr)
	r.cmd = exec.Command("redis-server", "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--dbfilename", "dump.rdb")
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	done := make(chan struct{})
	r.done = done
	go func() {
		_ = r.cmd.Wait()
		close(done)
	}()
	c := redis.NewClient(&redis.Options{Addr: r.addr})
	defer c.Close()
	platformtest.Eventually(r.t, "redis-server answers on "+r.addr, func() bool {
		select {
		case <-done:
			r.t.Fatalf("redis-server exited:\n%s", r.out.String())
		default:
		}
		return c.Ping(context.Background()).Err() == nil
	})
}

// kill ends redis-server with SIGKILL: what it had not saved is lost.
func (r *redisServer) kill() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.done
	r.cmd = nil
}

// buildMercato builds the mercato binary into the test's directory.
func buildMercato(t *testing.T) string {
	t.Helper()
	binary := filepath.Join(t.TempDir(), "mercato")
	build := exec.Command("go", "build", "-o", binary, "github.com/mercato/mercato/cmd/mercato")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build mercato: %v\n%s", err, out)
	}
	return binary
}

// process is one `mercato serve inventory` child process.
type process struct {
	*instance
	cmd  *exec.Cmd
	done chan struct{}
	out  *platformtest.Buffer
}

// spawn runs `mercato serve inventory` on the harness's configuration and
// waits until it serves; it is stopped at the end of the test.
func (h *harness) spawn(binary string) *process {
	t := h.t
	t.Helper()
	addr := platformtest.ClosedAddr(t)
	url := "http://" + addr
	p := &process{out: &platformtest.Buffer{}, done: make(chan struct{})}
	p.instance = &instance{url: url, client: inventoryv1connect.NewInventoryServiceClient(http.DefaultClient, url), stop: p.terminate}
	c := h.cfg
	p.cmd = exec.Command(binary, "serve", Name)
	p.cmd.Env = append(os.Environ(),
		"MERCATO_CONFIG="+filepath.Join(t.TempDir(), "mercato.yaml"),
		"MERCATO_NAMESPACE="+c.Namespace,
		"MERCATO_LOG_FORMAT=text",
		"MERCATO_PUBLIC_URL="+c.PublicURL,
		"MERCATO_POSTGRES_URL="+c.Postgres.URL,
		"MERCATO_REDIS_URL="+c.Redis.URL,
		"MERCATO_NATS_URL="+c.Broker.NATSURL,
		"MERCATO_SERVICES__IDENTITY__URL="+c.Service("identity").URL,
		"MERCATO_SERVICES__INVENTORY__LISTEN="+addr,
		fmt.Sprintf("MERCATO_POSTGRES__MAX_CONNS=%d", c.Postgres.MaxConns),
		fmt.Sprintf("MERCATO_INVENTORY__SWEEP_INTERVAL=%s", c.Inventory.SweepInterval),
		fmt.Sprintf("MERCATO_INVENTORY__LEDGER_BATCH=%d", c.Inventory.LedgerBatch),
	)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.terminate()
		if t.Failed() {
			t.Logf("mercato serve %s (pid %d) output:\n%s", Name, p.cmd.Process.Pid, p.out.String())
		}
	})
	platformtest.EventuallyWithin(t, time.Minute, "mercato serve "+Name+" answers", func() bool {
		select {
		case <-p.done:
			t.Fatalf("mercato serve %s exited:\n%s", Name, p.out.String())
		default:
		}
		_, err := p.client.GetStock(context.Background(), connect.NewRequest(&inventoryv1.GetStockRequest{VariantIds: []string{newVariant()}}))
		return err == nil
	})
	return p
}

// kill ends the process with SIGKILL, as a crash or the OOM killer would.
func (p *process) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// terminate stops the process with SIGTERM, and SIGKILL if it does not
// exit within 30 seconds.
func (p *process) terminate() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.kill()
	}
}
