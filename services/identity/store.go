package identity

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/pg"
)

// EventCustomerRegistered is published when an account is created.
const EventCustomerRegistered = "customer.registered"

// CustomerRegistered is the data of a customer.registered event.
type CustomerRegistered struct {
	CustomerID string `json:"customer_id"`
	Email      string `json:"email"`
}

// adminBootstrapLock serialises the admin bootstrap of replicas starting
// together (pg_advisory_xact_lock key; any constant unique to this database).
const adminBootstrapLock = 0x6964656e74697479 // "identity"

// Store keeps accounts and addresses in the identity database; a
// registration writes its event to the outbox in the same transaction.
type Store struct {
	pool      *pgxpool.Pool
	namespace string
}

// NewStore returns a store over pool; namespace names the event topics.
func NewStore(pool *pgxpool.Pool, namespace string) *Store {
	return &Store{pool: pool, namespace: namespace}
}

func (s *Store) publish(ctx context.Context, tx pgx.Tx, typ, subject string, data any) error {
	env, err := events.New(serviceName, typ, subject, data)
	if err != nil {
		return err
	}
	return events.Add(ctx, tx, s.namespace, env)
}

const customerColumns = `id, email, name, password_hash, is_admin, created_at, updated_at`

func scanCustomer(row pgx.Row) (*Customer, error) {
	var c Customer
	var updated time.Time
	err := row.Scan(&c.ID, &c.Email, &c.Name, &c.passwordHash, &c.IsAdmin, &c.CreatedAt, &updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	c.CreatedAt = c.CreatedAt.UTC()
	c.version = updated.UnixMicro()
	return &c, nil
}

// CreateCustomer stores a new account and its customer.registered event;
// ErrEmailTaken when another account has the email.
func (s *Store) CreateCustomer(ctx context.Context, c *Customer) error {
	return pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := insertCustomer(ctx, tx, c); err != nil {
			return err
		}
		return s.publish(ctx, tx, EventCustomerRegistered, c.ID, CustomerRegistered{CustomerID: c.ID, Email: c.Email})
	})
}

func insertCustomer(ctx context.Context, tx pgx.Tx, c *Customer) error {
	_, err := tx.Exec(ctx, `INSERT INTO customers (id, email, name, password_hash, is_admin, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $6)`, c.ID, c.Email, c.Name, c.passwordHash, c.IsAdmin, c.CreatedAt)
	if _, unique := pg.IsUniqueViolation(err); unique {
		return ErrEmailTaken
	}
	if err != nil {
		return fmt.Errorf("insert customer: %w", err)
	}
	return nil
}

// Customer reads one account by id.
func (s *Store) Customer(ctx context.Context, customerID string) (*Customer, error) {
	return scanCustomer(s.pool.QueryRow(ctx, `SELECT `+customerColumns+` FROM customers WHERE id = $1`, customerID))
}

// CustomerByEmail reads one account by its normalised email.
func (s *Store) CustomerByEmail(ctx context.Context, email string) (*Customer, error) {
	return scanCustomer(s.pool.QueryRow(ctx, `SELECT `+customerColumns+` FROM customers WHERE email = $1`, email))
}

// UpdateCustomer changes an account inside a transaction: it locks the row,
// hands the current account to fn and stores what fn leaves.
func (s *Store) UpdateCustomer(ctx context.Context, customerID string, fn func(*Customer) error) (*Customer, error) {
	var out *Customer
	err := pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		c, err := scanCustomer(tx.QueryRow(ctx, `SELECT `+customerColumns+` FROM customers WHERE id = $1 FOR UPDATE`, customerID))
		if err != nil {
			return err
		}
		if err := fn(c); err != nil {
			return err
		}
		var updated time.Time
		if err := tx.QueryRow(ctx, `UPDATE customers SET name = $2, updated_at = greatest(now(), updated_at + interval '1 microsecond') WHERE id = $1 RETURNING updated_at`, c.ID, c.Name).Scan(&updated); err != nil {
			return fmt.Errorf("update customer: %w", err)
		}
		c.version = updated.UnixMicro()
		out = c
		return nil
	})
	return out, err
}

// SetPasswordHash replaces a stored hash, as a rehash after a parameter
// change does; old is the hash that was verified, so a concurrent password
// change is not overwritten.
func (s *Store) SetPasswordHash(ctx context.Context, customerID, old, hash string) error {
	_, err := s.pool.Exec(ctx, `UPDATE customers SET password_hash = $3, updated_at = now() WHERE id = $1 AND password_hash = $2`, customerID, old, hash)
	return err
}

// BootstrapAdmin makes sure an admin account with email and password exists:
// it creates one (publishing customer.registered) or gives the existing
// account the password and the admin flag. Replicas starting together take
// turns under an advisory lock; a restart with an unchanged password and a
// hash made with the current parameters writes nothing.
func (s *Store) BootstrapAdmin(ctx context.Context, email, password string, hasher *Hasher, now time.Time) (created bool, err error) {
	var f fieldErrors
	validateEmail(&f, "identity.admin_email", email)
	validatePassword(&f, "identity.admin_password", password)
	if err := f.err(); err != nil {
		return false, err
	}
	err = pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(adminBootstrapLock)); err != nil {
			return err
		}
		existing, err := scanCustomer(tx.QueryRow(ctx, `SELECT `+customerColumns+` FROM customers WHERE email = $1 FOR UPDATE`, email))
		switch {
		case errors.Is(err, ErrNotFound):
			c, err := NewCustomer(Registration{Email: email, Password: password, Name: "Administrator"}, now, hasher.Hash)
			if err != nil {
				return err
			}
			c.IsAdmin = true
			if err := insertCustomer(ctx, tx, c); err != nil {
				return err
			}
			created = true
			return s.publish(ctx, tx, EventCustomerRegistered, c.ID, CustomerRegistered{CustomerID: c.ID, Email: c.Email})
		case err != nil:
			return err
		}
		ok, rehash, err := hasher.Verify(existing.passwordHash, password)
		if err == nil && ok && !rehash && existing.IsAdmin {
			return nil
		}
		h, err := hasher.Hash(password)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE customers SET password_hash = $2, is_admin = true, updated_at = now() WHERE id = $1`, existing.ID, h)
		return err
	})
	return created, err
}

const addressColumns = `id, name, line1, line2, city, region, postal_code, country, phone, created_at`

func scanAddress(row pgx.Row) (*Address, error) {
	var a Address
	err := row.Scan(&a.ID, &a.Name, &a.Line1, &a.Line2, &a.City, &a.Region, &a.PostalCode, &a.Country, &a.Phone, &a.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	a.CreatedAt = a.CreatedAt.UTC()
	return &a, nil
}

// Addresses lists a customer's saved addresses, oldest first.
func (s *Store) Addresses(ctx context.Context, customerID string) ([]*Address, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+addressColumns+` FROM addresses WHERE customer_id = $1 ORDER BY created_at, id`, customerID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Address
	for rows.Next() {
		a, err := scanAddress(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// Address reads one of a customer's addresses; another customer's address
// is ErrNotFound.
func (s *Store) Address(ctx context.Context, customerID, addressID string) (*Address, error) {
	return scanAddress(s.pool.QueryRow(ctx, `SELECT `+addressColumns+` FROM addresses WHERE id = $1 AND customer_id = $2`, addressID, customerID))
}

// AddAddress saves an address for a customer, refusing the one past
// maxAddresses. The customer's row is locked so that concurrent additions
// cannot both squeeze under the limit.
func (s *Store) AddAddress(ctx context.Context, customerID string, a *Address) error {
	return pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM customers WHERE id = $1 FOR UPDATE`, customerID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM addresses WHERE customer_id = $1`, customerID).Scan(&n); err != nil {
			return err
		}
		if n >= maxAddresses {
			return ErrAddressLimit
		}
		_, err = tx.Exec(ctx, `INSERT INTO addresses (id, customer_id, name, line1, line2, city, region, postal_code, country, phone, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			a.ID, customerID, a.Name, a.Line1, a.Line2, a.City, a.Region, a.PostalCode, a.Country, a.Phone, a.CreatedAt)
		if err != nil {
			return fmt.Errorf("insert address: %w", err)
		}
		return nil
	})
}

// DeleteAddress removes one of a customer's addresses; another customer's
// address is ErrNotFound.
func (s *Store) DeleteAddress(ctx context.Context, customerID, addressID string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM addresses WHERE id = $1 AND customer_id = $2`, addressID, customerID)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}
