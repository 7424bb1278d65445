//go:build race

package test

// raceEnabled makes the tests build the server binary with -race too.
const raceEnabled = true
