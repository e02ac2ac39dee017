package app_test

import (
	"context"
	"io"
	"strings"

	"github.com/latchkey/latchkey/ent/schema/rule"
	"github.com/latchkey/latchkey/internal/app"
)

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

func systemContext(ctx context.Context) context.Context { return rule.SystemContext(ctx) }

func appOptions() app.Options { return app.Options{} }
