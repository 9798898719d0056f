package inventory

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/services/inventory/domain"
)

// TestSweeperSettlesHalfFinishedCommits plays a process that died between
// the steps of a commit: once after fencing the reservation in Redis and
// before the ledger recorded the sale (the units must come back), once
// after the ledger recorded it and before Redis moved the units (the sale
// must stand). The sweeper asks the ledger once the grace has passed.
func TestSweeperSettlesHalfFinishedCommits(t *testing.T) {
	h := newHarness(t, nil)
	in := h.start()
	variant := newVariant()
	h.setStock(in, variant, 10)
	ctx := context.Background()
	past := time.Now().Add(-grace - time.Second)

	lost, err := reserveFor(in, variant, 2, time.Hour, "died-before-ledger")
	if err != nil {
		t.Fatal(err)
	}
	sold, err := reserveFor(in, variant, 3, time.Hour, "died-after-ledger")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.hot.PrepareCommit(ctx, lost.GetId(), past, grace, retention); err != nil {
		t.Fatal(err)
	}
	p, err := h.hot.PrepareCommit(ctx, sold.GetId(), past, grace, retention)
	if err != nil {
		t.Fatal(err)
	}
	if status, err := h.ledger.Commit(ctx, p.Reservation, p.Epoch, past); err != nil || status != domain.StatusCommitted {
		t.Fatalf("ledger commit: %v %v", status, err)
	}

	platformtest.EventuallyWithin(t, 10*time.Second, "the sweeper settled both commits", func() bool {
		c := h.redisStock(variant)
		return c.Reserved == 0 && c.Committed == 3
	})
	if c := h.agree(variant); c.OnHand != 10 || c.Committed != 3 || c.Reserved != 0 {
		t.Fatalf("after settling: %+v", c)
	}
	_, err = commit(in, lost.GetId())
	wantCode(t, "commit of the reservation the sweeper gave back", err, connect.CodeFailedPrecondition)
	if got, err := commit(in, sold.GetId()); err != nil || got.GetStatus() != "committed" {
		t.Fatalf("commit retried after the sweeper finished it: %v %v", got, err)
	}
}

// TestSweeperSettlesHalfFinishedAdjustments plays a process that died
// after marking a lower count in Redis and before the ledger recorded it:
// the cap holds until the sweeper finds the ledger never recorded the
// count and lifts it.
func TestSweeperSettlesHalfFinishedAdjustments(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.Inventory.SweepInterval = time.Second })
	in := h.start()
	variant := newVariant()
	h.setStock(in, variant, 10)
	h.caughtUp()
	rows, err := h.ledger.Stock(context.Background(), []string{variant})
	if err != nil || len(rows) != 1 {
		t.Fatalf("ledger rows %v: %v", rows, err)
	}
	row := rows[0]
	past := time.Now().Add(-grace - time.Second)
	if _, err := h.hot.BeginAdjust(context.Background(), past, []domain.AdjustRow{{
		Adjustment: domain.Adjustment{VariantID: variant, Location: row.Location, OnHand: 2},
		Seq:        row.AdjustSeq + 1, PrevSeq: row.AdjustSeq, PrevOnHand: row.OnHand,
	}}); err != nil {
		t.Fatal(err)
	}
	if a := h.redisStock(variant).Available(); a != 2 {
		t.Fatalf("a count in progress must cap what is promised: available %d, want 2", a)
	}
	platformtest.EventuallyWithin(t, 10*time.Second, "the sweeper lifted the unrecorded count", func() bool {
		return h.redisStock(variant).Available() == 10
	})
	if c := h.agree(variant); c.OnHand != 10 {
		t.Fatalf("after settling: %+v", c)
	}
}
