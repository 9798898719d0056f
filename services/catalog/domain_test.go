package catalog

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/id"
	"github.com/mercato/mercato/platform/money"
)

func ptr[T any](v T) *T { return &v }

func validInput() ProductInput {
	return ProductInput{
		Title:       "  Oak Chair ",
		Description: "A sturdy chair.",
		CategoryIDs: []string{id.New("cat")},
		Images:      []Image{{URL: "https://img.example/chair.jpg", Alt: "chair"}},
		Variants:    []VariantInput{{SKU: ptr("CHAIR-1"), Price: &money.Money{Amount: 4999, Currency: "EUR"}}},
	}
}

// fields returns the field names of a validation error.
func fields(t *testing.T, err error) []string {
	t.Helper()
	var v *ValidationError
	if !errors.As(err, &v) {
		t.Fatalf("err = %v, want a ValidationError", err)
	}
	var out []string
	for _, f := range v.Fields {
		out = append(out, f.Field)
	}
	return out
}

func TestNewProduct(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	p, err := NewProduct(validInput(), now)
	if err != nil {
		t.Fatal(err)
	}
	if p.Title != "Oak Chair" || p.Version != 1 || !id.Valid("prod", p.ID) {
		t.Fatalf("product = %+v", p)
	}
	v := p.Variants[0]
	if !id.Valid("var", v.ID) || v.Title != "Oak Chair" || !v.InStock {
		t.Fatalf("variant defaults not applied: %+v", v)
	}
}

func TestNewProductRefusesBadInput(t *testing.T) {
	tests := []struct {
		name   string
		change func(*ProductInput)
		want   []string
	}{
		{"missing title", func(in *ProductInput) { in.Title = "  " }, []string{"title"}},
		{"long title", func(in *ProductInput) { in.Title = strings.Repeat("x", 201) }, []string{"title"}},
		{"no variants", func(in *ProductInput) { in.Variants = nil }, []string{"variants"}},
		{"missing sku and price", func(in *ProductInput) { in.Variants = []VariantInput{{}} }, []string{"variants[0].sku", "variants[0].price"}},
		{"bad sku", func(in *ProductInput) { in.Variants[0].SKU = ptr("has space") }, []string{"variants[0].sku"}},
		{"lowercase currency", func(in *ProductInput) { in.Variants[0].Price.Currency = "eur" }, []string{"variants[0].price.currency"}},
		{"negative price", func(in *ProductInput) { in.Variants[0].Price.Amount = -1 }, []string{"variants[0].price.amount"}},
		{"duplicate sku", func(in *ProductInput) {
			in.Variants = append(in.Variants, VariantInput{SKU: ptr("chair-1"), Price: &money.Money{Amount: 1, Currency: "EUR"}})
		}, []string{"variants[1].sku"}},
		{"id on create", func(in *ProductInput) { in.Variants[0].ID = "var_x" }, []string{"variants[0].id"}},
		{"bad category id", func(in *ProductInput) { in.CategoryIDs = []string{"furniture"} }, []string{"category_ids[0]"}},
		{"repeated category", func(in *ProductInput) { in.CategoryIDs = append(in.CategoryIDs, in.CategoryIDs[0]) }, []string{"category_ids[1]"}},
		{"relative image url", func(in *ProductInput) { in.Images[0].URL = "/chair.jpg" }, []string{"images[0].url"}},
		{"javascript image url", func(in *ProductInput) { in.Images[0].URL = "javascript:alert(1)" }, []string{"images[0].url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := validInput()
			tt.change(&in)
			_, err := NewProduct(in, time.Now())
			if got := strings.Join(fields(t, err), ","); got != strings.Join(tt.want, ",") {
				t.Fatalf("invalid fields = %s, want %s", got, strings.Join(tt.want, ","))
			}
		})
	}
}

func TestApplyPatch(t *testing.T) {
	p, err := NewProduct(validInput(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	vid := p.Variants[0].ID
	later := p.UpdatedAt.Add(time.Minute)
	err = p.Apply(ProductPatch{
		Title: ptr("Walnut Chair"),
		Variants: []VariantInput{
			{ID: vid, Price: &money.Money{Amount: 5999, Currency: "EUR"}},
			{SKU: ptr("CHAIR-2"), Title: ptr("Walnut Chair / Black"), Price: &money.Money{Amount: 6999, Currency: "EUR"}},
		},
	}, later)
	if err != nil {
		t.Fatal(err)
	}
	if p.Title != "Walnut Chair" || p.Version != 2 || !p.UpdatedAt.Equal(later) {
		t.Fatalf("patched product = %+v", p)
	}
	if len(p.Variants) != 2 || p.Variants[0].Price.Amount != 5999 || p.Variants[1].SKU != "CHAIR-2" {
		t.Fatalf("variants = %+v", p.Variants)
	}
}

func TestInvalidPatchLeavesProductUnchanged(t *testing.T) {
	p, err := NewProduct(validInput(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	before := *p
	beforeVariants := append([]Variant(nil), p.Variants...)
	err = p.Apply(ProductPatch{
		Title:    ptr("A valid new title"),
		Variants: []VariantInput{{ID: p.Variants[0].ID, Price: &money.Money{Amount: 1, Currency: "XXX"}}, {ID: "var_unknown"}},
	}, time.Now())
	if got := strings.Join(fields(t, err), ","); got != "variants[0].price.currency,variants[1].id" {
		t.Fatalf("fields = %s", got)
	}
	if p.Title != before.Title || p.Version != before.Version || p.Variants[0] != beforeVariants[0] {
		t.Fatalf("product half-changed: %+v", p)
	}
}

func TestCategoryValidation(t *testing.T) {
	tests := []struct {
		name string
		in   CategoryInput
		want string
	}{
		{"missing", CategoryInput{}, "slug,name"},
		{"upper slug", CategoryInput{Slug: ptr("Chairs"), Name: ptr("Chairs")}, "slug"},
		{"double hyphen", CategoryInput{Slug: ptr("a--b"), Name: ptr("A")}, "slug"},
		{"bad parent", CategoryInput{Slug: ptr("a"), Name: ptr("A"), ParentID: ptr("nope")}, "parent_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewCategory(tt.in, time.Now())
			if got := strings.Join(fields(t, err), ","); got != tt.want {
				t.Fatalf("fields = %s, want %s", got, tt.want)
			}
		})
	}
	c, err := NewCategory(CategoryInput{Slug: ptr("chairs"), Name: ptr("Chairs")}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(CategoryInput{ParentID: &c.ID}, time.Now()); err == nil {
		t.Fatal("a category became its own parent")
	}
}

func TestETagMatching(t *testing.T) {
	tests := []struct {
		header string
		want   bool
	}{
		{"", false},
		{`"v3"`, true},
		{`W/"v3"`, true},
		{`"v2", "v3"`, true},
		{`"v2"`, false},
		{"*", true},
	}
	for _, tt := range tests {
		if got := etagMatches(tt.header, `"v3"`); got != tt.want {
			t.Errorf("etagMatches(%q) = %v, want %v", tt.header, got, tt.want)
		}
	}
}
