package schema

import (
	"entgo.io/ent"

	"github.com/latchkey/latchkey/ent/schema/rule"
)

// Policy of the Tenant: see rule.TenantSelf.
func (Tenant) Policy() ent.Policy { return rule.TenantSelf() }

// Policy of the ApiKey: see rule.TenantOwned.
func (ApiKey) Policy() ent.Policy { return rule.TenantOwned() }

// Policy of the Webhook: see rule.TenantOwned.
func (Webhook) Policy() ent.Policy { return rule.TenantOwned() }

// Policy of the WebhookDelivery: see rule.TenantOwned.
func (WebhookDelivery) Policy() ent.Policy { return rule.TenantOwned() }

// Policy of the AuditLog: see rule.ReadOnlyTenantOwned.
func (AuditLog) Policy() ent.Policy { return rule.ReadOnlyTenantOwned() }

// Policy of the UsageLog: see rule.ReadOnlyTenantOwned.
func (UsageLog) Policy() ent.Policy { return rule.ReadOnlyTenantOwned() }

// Policy of the UsageRollup: see rule.ReadOnlyTenantOwned.
func (UsageRollup) Policy() ent.Policy { return rule.ReadOnlyTenantOwned() }

// Policy of the WebhookAttempt: see rule.ReadOnlyTenantOwned.
func (WebhookAttempt) Policy() ent.Policy { return rule.ReadOnlyTenantOwned() }

// Policy of the Plan: see rule.PlatformOnly.
func (Plan) Policy() ent.Policy { return rule.PlatformOnly() }

// Policy of the Owner: see rule.TenantOwned.
func (Owner) Policy() ent.Policy { return rule.TenantOwned() }

// Policy of the UsageFold: see rule.SystemOnly.
func (UsageFold) Policy() ent.Policy { return rule.SystemOnly() }
