package main

import "testing"

func TestExitCodesDistinct(t *testing.T) {
	codes := map[string]int{"ExitOK": ExitOK, "ExitFailure": ExitFailure, "ExitUsage": ExitUsage}
	seen := map[int]string{}
	for name, c := range codes {
		if other, ok := seen[c]; ok {
			t.Errorf("%s and %s share exit code %d", name, other, c)
		}
		seen[c] = name
	}
}
