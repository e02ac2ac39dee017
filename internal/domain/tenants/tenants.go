// Package tenants validates and applies changes to tenants.
package tenants

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/latchkey/latchkey/ent"
	entplan "github.com/latchkey/latchkey/ent/plan"
	"github.com/latchkey/latchkey/ent/schema/rule"
	enttenant "github.com/latchkey/latchkey/ent/tenant"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

var slugRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$`)

// CreateParams are the fields of a new tenant.
type CreateParams struct {
	Name   string
	Slug   string
	Plan   *string
	Active *bool
	// KeyPrefix starts the tenant's keys (default "lk").
	KeyPrefix *string
}

// UpdateParams are the fields to change; nil leaves a field as it is.
type UpdateParams struct {
	Name   *string
	Plan   *string
	Active *bool
	// KeyPrefix changes the start of keys created from now on.
	KeyPrefix *string
}

// validKeyPrefix checks a tenant's key prefix: 2 to 12 lowercase letters or digits.
func validKeyPrefix(p *string) error {
	if p == nil {
		return nil
	}
	if len(*p) < 2 || len(*p) > 12 {
		return fault.BadInput("keyPrefix", "keyPrefix must be 2 to 12 lowercase letters or digits")
	}
	for _, c := range *p {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return fault.BadInput("keyPrefix", "keyPrefix must be 2 to 12 lowercase letters or digits")
		}
	}
	return nil
}

// ValidName checks a display name: 1-100 characters after trimming, no control
// characters. It returns a BAD_USER_INPUT *fault.Error naming field.
func ValidName(field, name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" || utf8.RuneCountInString(name) > 100 {
		return "", fault.BadInput(field, "%s must be 1 to 100 characters", field)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return "", fault.BadInput(field, "%s must not contain control characters", field)
		}
	}
	return name, nil
}

// validPlan checks that the plan named p exists (in the database: the authority, even
// on an instance whose plan catalog has not reloaded yet). It returns BAD_USER_INPUT.
func validPlan(ctx context.Context, client *ent.Client, p *string) error {
	if p == nil {
		return nil
	}
	names, err := client.Plan.Query().Select(entplan.FieldName).Strings(rule.SystemContext(ctx))
	if err != nil {
		return err
	}
	if !slices.Contains(names, *p) {
		slices.Sort(names)
		return fault.BadInput("plan", "unknown plan %q (known: %s)", *p, strings.Join(names, ", "))
	}
	return nil
}

// Create validates p and creates the tenant with client (a transactional client
// when called inside txn.WithTx).
// It returns BAD_USER_INPUT errors for an invalid name, slug or plan and for a slug
// already taken.
func Create(ctx context.Context, client *ent.Client, p CreateParams) (*ent.Tenant, error) {
	name, err := ValidName("name", p.Name)
	if err != nil {
		return nil, err
	}
	if !slugRE.MatchString(p.Slug) {
		return nil, fault.BadInput("slug", "slug must be 3-63 lowercase letters, digits or dashes, starting and ending with a letter or digit")
	}
	if err := validPlan(ctx, client, p.Plan); err != nil {
		return nil, err
	}
	if err := validKeyPrefix(p.KeyPrefix); err != nil {
		return nil, err
	}
	if taken, err := client.Tenant.Query().Where(enttenant.Slug(p.Slug)).Exist(ctx); err != nil {
		return nil, err
	} else if taken {
		return nil, fault.BadInput("slug", "slug %q is taken", p.Slug)
	}
	return client.Tenant.Create().
		SetName(name).
		SetSlug(p.Slug).
		SetNillablePlan(p.Plan).
		SetNillableActive(p.Active).
		SetNillableKeyPrefix(p.KeyPrefix).
		Save(ctx)
}

// Update validates p and applies it to the tenant id. Only platform admins may change
// plan and active. It returns NOT_FOUND for a tenant the viewer cannot see,
// FORBIDDEN for admin-only fields, BAD_USER_INPUT for invalid values; changed reports
// whether something that affects key verification (plan, active) changed.
func Update(ctx context.Context, client *ent.Client, id string, p UpdateParams) (t *ent.Tenant, changed bool, err error) {
	v := viewer.FromContext(ctx)
	if (p.Plan != nil || p.Active != nil) && (v == nil || !v.Admin) {
		return nil, false, fault.New(fault.Forbidden, "only platform admins can change plan or active")
	}
	if err := validPlan(ctx, client, p.Plan); err != nil {
		return nil, false, err
	}
	if err := validKeyPrefix(p.KeyPrefix); err != nil {
		return nil, false, err
	}
	old, err := client.Tenant.Get(ctx, id)
	if err != nil {
		return nil, false, err
	}
	u := old.Update().SetNillablePlan(p.Plan).SetNillableActive(p.Active).SetNillableKeyPrefix(p.KeyPrefix)
	if p.Name != nil {
		name, err := ValidName("name", *p.Name)
		if err != nil {
			return nil, false, err
		}
		u.SetName(name)
	}
	t, err = u.Save(ctx)
	if err != nil {
		return nil, false, err
	}
	return t, t.Plan != old.Plan || t.Active != old.Active, nil
}
