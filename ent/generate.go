// Package ent holds the generated ent client. Hand-written code lives in ent/schema.
package ent

//go:generate go run -mod=mod entc.go
