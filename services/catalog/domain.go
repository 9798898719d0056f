package catalog

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mercato/mercato/platform/id"
	"github.com/mercato/mercato/platform/money"
	"github.com/mercato/mercato/platform/problem"
)

// Limits on what a product may hold.
const (
	maxTitle       = 200
	maxDescription = 20_000
	maxVariants    = 100
	maxImages      = 20
	maxCategories  = 20
	maxSKU         = 64
	maxURL         = 2048
	maxAlt         = 300
	maxSlug        = 80
	maxName        = 120
)

// Domain errors; the HTTP and RPC edges translate them.
var (
	ErrNotFound        = errors.New("not found")
	ErrVersionMismatch = errors.New("version mismatch")
	ErrCategoryInUse   = errors.New("category in use")
)

// ConflictError is a uniqueness clash on a named field.
type ConflictError struct {
	Field, Value string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s %q is already taken", e.Field, e.Value)
}

// ValidationError lists every invalid field of an input.
type ValidationError struct{ Fields []problem.FieldError }

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + " " + f.Message
	}
	return "invalid: " + strings.Join(parts, "; ")
}

// Product is a sellable item with one or more variants.
type Product struct {
	ID          string    `json:"id"`
	Title       string    `json:"title"`
	Description string    `json:"description"`
	CategoryIDs []string  `json:"category_ids"`
	Images      []Image   `json:"images"`
	Variants    []Variant `json:"variants"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	// Version grows with every change; it is not part of the public body
	// but is sent as the ETag.
	Version int64 `json:"-"`
}

// Image is a picture of a product.
type Image struct {
	URL string `json:"url"`
	Alt string `json:"alt,omitempty"`
}

// Variant is one purchasable SKU of a product.
type Variant struct {
	ID      string      `json:"id"`
	SKU     string      `json:"sku"`
	Title   string      `json:"title"`
	Price   money.Money `json:"price"`
	InStock bool        `json:"in_stock"`
}

// Category groups products for browsing.
type Category struct {
	ID       string    `json:"id"`
	Slug     string    `json:"slug"`
	Name     string    `json:"name"`
	ParentID *string   `json:"parent_id"`
	Created  time.Time `json:"created_at"`
	Updated  time.Time `json:"updated_at"`
}

// ProductInput is what an admin sends to create a product.
type ProductInput struct {
	Title       string         `json:"title"`
	Description string         `json:"description"`
	CategoryIDs []string       `json:"category_ids"`
	Images      []Image        `json:"images"`
	Variants    []VariantInput `json:"variants"`
}

// VariantInput creates a variant, or with ID set, changes one in a patch.
type VariantInput struct {
	ID      string       `json:"id,omitempty"`
	SKU     *string      `json:"sku"`
	Title   *string      `json:"title"`
	Price   *money.Money `json:"price"`
	InStock *bool        `json:"in_stock"`
}

// ProductPatch changes the fields it names and leaves the others alone.
// Variants with an id are changed; variants without one are added.
type ProductPatch struct {
	Title       *string        `json:"title"`
	Description *string        `json:"description"`
	CategoryIDs *[]string      `json:"category_ids"`
	Images      *[]Image       `json:"images"`
	Variants    []VariantInput `json:"variants"`
}

// CategoryInput creates a category or, in a patch, changes it.
type CategoryInput struct {
	Slug     *string `json:"slug"`
	Name     *string `json:"name"`
	ParentID *string `json:"parent_id"`
}

// fieldErrors collects validation failures.
type fieldErrors []problem.FieldError

func (f *fieldErrors) add(field, format string, args ...any) {
	*f = append(*f, problem.FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (f fieldErrors) err() error {
	if len(f) == 0 {
		return nil
	}
	return &ValidationError{Fields: f}
}

var skuPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
var slugPattern = regexp.MustCompile(`^[a-z0-9]+(?:-[a-z0-9]+)*$`)

// NewProduct validates in and builds a product with fresh ids.
func NewProduct(in ProductInput, now time.Time) (*Product, error) {
	var errs fieldErrors
	p := &Product{
		ID:          id.New("prod"),
		Title:       strings.TrimSpace(in.Title),
		Description: strings.TrimSpace(in.Description),
		CategoryIDs: in.CategoryIDs,
		Images:      in.Images,
		CreatedAt:   now,
		UpdatedAt:   now,
		Version:     1,
	}
	if p.CategoryIDs == nil {
		p.CategoryIDs = []string{}
	}
	if p.Images == nil {
		p.Images = []Image{}
	}
	validateTitle(&errs, "title", p.Title)
	validateDescription(&errs, p.Description)
	validateCategoryIDs(&errs, p.CategoryIDs)
	validateImages(&errs, p.Images)
	switch {
	case len(in.Variants) == 0:
		errs.add("variants", "must hold at least one variant")
	case len(in.Variants) > maxVariants:
		errs.add("variants", "must hold at most %d variants", maxVariants)
	}
	skus := map[string]int{}
	for i, vin := range in.Variants {
		field := fmt.Sprintf("variants[%d]", i)
		if vin.ID != "" {
			errs.add(field+".id", "must not be set when creating a product")
		}
		v := newVariant(&errs, field, vin, p.Title)
		if j, dup := skus[strings.ToLower(v.SKU)]; dup && v.SKU != "" {
			errs.add(field+".sku", "repeats the sku of variants[%d]", j)
		}
		skus[strings.ToLower(v.SKU)] = i
		p.Variants = append(p.Variants, v)
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return p, nil
}

func newVariant(errs *fieldErrors, field string, in VariantInput, productTitle string) Variant {
	v := Variant{ID: id.New("var"), InStock: true}
	if in.SKU == nil {
		errs.add(field+".sku", "is required")
	} else {
		v.SKU = strings.TrimSpace(*in.SKU)
		validateSKU(errs, field+".sku", v.SKU)
	}
	v.Title = productTitle
	if in.Title != nil {
		v.Title = strings.TrimSpace(*in.Title)
		validateTitle(errs, field+".title", v.Title)
	}
	if in.Price == nil {
		errs.add(field+".price", "is required")
	} else {
		validatePrice(errs, field+".price", *in.Price)
		v.Price = *in.Price
	}
	if in.InStock != nil {
		v.InStock = *in.InStock
	}
	return v
}

// Apply changes p by patch, validating the result; p is left unchanged when
// the patch is invalid.
func (p *Product) Apply(patch ProductPatch, now time.Time) error {
	var errs fieldErrors
	next := *p
	next.Variants = append([]Variant(nil), p.Variants...)
	if patch.Title != nil {
		next.Title = strings.TrimSpace(*patch.Title)
		validateTitle(&errs, "title", next.Title)
	}
	if patch.Description != nil {
		next.Description = strings.TrimSpace(*patch.Description)
		validateDescription(&errs, next.Description)
	}
	if patch.CategoryIDs != nil {
		next.CategoryIDs = *patch.CategoryIDs
		if next.CategoryIDs == nil {
			next.CategoryIDs = []string{}
		}
		validateCategoryIDs(&errs, next.CategoryIDs)
	}
	if patch.Images != nil {
		next.Images = *patch.Images
		if next.Images == nil {
			next.Images = []Image{}
		}
		validateImages(&errs, next.Images)
	}
	for i, vin := range patch.Variants {
		field := fmt.Sprintf("variants[%d]", i)
		if vin.ID == "" {
			next.Variants = append(next.Variants, newVariant(&errs, field, vin, next.Title))
			continue
		}
		idx := -1
		for j := range next.Variants {
			if next.Variants[j].ID == vin.ID {
				idx = j
			}
		}
		if idx < 0 {
			errs.add(field+".id", "is not a variant of this product")
			continue
		}
		v := &next.Variants[idx]
		if vin.SKU != nil {
			v.SKU = strings.TrimSpace(*vin.SKU)
			validateSKU(&errs, field+".sku", v.SKU)
		}
		if vin.Title != nil {
			v.Title = strings.TrimSpace(*vin.Title)
			validateTitle(&errs, field+".title", v.Title)
		}
		if vin.Price != nil {
			validatePrice(&errs, field+".price", *vin.Price)
			v.Price = *vin.Price
		}
		if vin.InStock != nil {
			v.InStock = *vin.InStock
		}
	}
	if len(next.Variants) > maxVariants {
		errs.add("variants", "must hold at most %d variants", maxVariants)
	}
	seen := map[string]bool{}
	for i, v := range next.Variants {
		if seen[strings.ToLower(v.SKU)] {
			errs.add(fmt.Sprintf("variants[%d].sku", i), "repeats another variant's sku")
		}
		seen[strings.ToLower(v.SKU)] = true
	}
	if err := errs.err(); err != nil {
		return err
	}
	next.UpdatedAt = now
	next.Version = p.Version + 1
	*p = next
	return nil
}

func validateTitle(errs *fieldErrors, field, s string) {
	switch n := utf8.RuneCountInString(s); {
	case n == 0:
		errs.add(field, "is required")
	case n > maxTitle:
		errs.add(field, "must be at most %d characters", maxTitle)
	}
}

func validateDescription(errs *fieldErrors, s string) {
	if utf8.RuneCountInString(s) > maxDescription {
		errs.add("description", "must be at most %d characters", maxDescription)
	}
}

func validateCategoryIDs(errs *fieldErrors, ids []string) {
	if len(ids) > maxCategories {
		errs.add("category_ids", "must hold at most %d categories", maxCategories)
	}
	seen := map[string]bool{}
	for i, c := range ids {
		field := fmt.Sprintf("category_ids[%d]", i)
		switch {
		case !id.Valid("cat", c):
			errs.add(field, "is not a category id")
		case seen[c]:
			errs.add(field, "is listed twice")
		}
		seen[c] = true
	}
}

func validateImages(errs *fieldErrors, imgs []Image) {
	if len(imgs) > maxImages {
		errs.add("images", "must hold at most %d images", maxImages)
	}
	for i, img := range imgs {
		field := fmt.Sprintf("images[%d]", i)
		u, err := url.Parse(img.URL)
		switch {
		case img.URL == "":
			errs.add(field+".url", "is required")
		case len(img.URL) > maxURL:
			errs.add(field+".url", "must be at most %d characters", maxURL)
		case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
			errs.add(field+".url", "must be an absolute http or https URL")
		}
		if utf8.RuneCountInString(img.Alt) > maxAlt {
			errs.add(field+".alt", "must be at most %d characters", maxAlt)
		}
	}
}

func validateSKU(errs *fieldErrors, field, sku string) {
	switch {
	case sku == "":
		errs.add(field, "is required")
	case len(sku) > maxSKU:
		errs.add(field, "must be at most %d characters", maxSKU)
	case !skuPattern.MatchString(sku):
		errs.add(field, "may hold only letters, digits, '.', '_' and '-', starting with a letter or digit")
	}
}

func validatePrice(errs *fieldErrors, field string, m money.Money) {
	if !money.ValidCurrency(m.Currency) {
		errs.add(field+".currency", "must be an ISO 4217 code such as EUR")
	}
	if m.Amount < 0 || m.Amount > money.MaxAmount {
		errs.add(field+".amount", "must be an integer from 0 to %d minor units", int64(money.MaxAmount))
	}
}

// NewCategory validates in and builds a category.
func NewCategory(in CategoryInput, now time.Time) (*Category, error) {
	var errs fieldErrors
	c := &Category{ID: id.New("cat"), Created: now, Updated: now}
	if in.Slug == nil {
		errs.add("slug", "is required")
	} else {
		c.Slug = strings.TrimSpace(*in.Slug)
		validateSlug(&errs, c.Slug)
	}
	if in.Name == nil {
		errs.add("name", "is required")
	} else {
		c.Name = strings.TrimSpace(*in.Name)
		validateName(&errs, c.Name)
	}
	if in.ParentID != nil {
		if !id.Valid("cat", *in.ParentID) {
			errs.add("parent_id", "is not a category id")
		}
		c.ParentID = in.ParentID
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// Apply changes c by patch, validating the result.
func (c *Category) Apply(patch CategoryInput, now time.Time) error {
	var errs fieldErrors
	next := *c
	if patch.Slug != nil {
		next.Slug = strings.TrimSpace(*patch.Slug)
		validateSlug(&errs, next.Slug)
	}
	if patch.Name != nil {
		next.Name = strings.TrimSpace(*patch.Name)
		validateName(&errs, next.Name)
	}
	if patch.ParentID != nil {
		switch {
		case !id.Valid("cat", *patch.ParentID):
			errs.add("parent_id", "is not a category id")
		case *patch.ParentID == c.ID:
			errs.add("parent_id", "must not be the category itself")
		}
		next.ParentID = patch.ParentID
	}
	if err := errs.err(); err != nil {
		return err
	}
	next.Updated = now
	*c = next
	return nil
}

func validateSlug(errs *fieldErrors, s string) {
	switch {
	case s == "":
		errs.add("slug", "is required")
	case len(s) > maxSlug:
		errs.add("slug", "must be at most %d characters", maxSlug)
	case !slugPattern.MatchString(s):
		errs.add("slug", "may hold only lowercase letters, digits and single hyphens")
	}
}

func validateName(errs *fieldErrors, s string) {
	switch n := utf8.RuneCountInString(s); {
	case n == 0:
		errs.add("name", "is required")
	case n > maxName:
		errs.add("name", "must be at most %d characters", maxName)
	}
}
