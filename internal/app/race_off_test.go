//go:build !race

package app_test

// raceEnabled reports whether the race detector is on: memory figures mean nothing under it.
const raceEnabled = false
