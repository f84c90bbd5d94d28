package jinja

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestForkPythonJSON checks the fork's changes against outputs of Python's
// json.dumps(json.loads(text), ensure_ascii=False).
func TestForkPythonJSON(t *testing.T) {
	tmpl, err := Compile(`{{ x | tojson }}|{{ x }}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ in, tojson, print string }{
		{"1.0", "1.0", "1.0"},
		{"2.5", "2.5", "2.5"},
		{"1e3", "1000.0", "1000.0"},
		{"0.0001", "0.0001", "0.0001"},
		{"1e-5", "1e-05", "1e-05"},
		{"1e16", "1e+16", "1e+16"},
		{"9999999999999998.0", "9999999999999998.0", "9999999999999998.0"},
		{"1234567.0", "1234567.0", "1234567.0"},
		{"-0.0", "-0.0", "-0.0"},
		{"-0", "0", "0"},
		{"1.5e-7", "1.5e-07", "1.5e-07"},
		{"12345678.9", "12345678.9", "12345678.9"},
		{"-17", "-17", "-17"},
		{"3.141592653589793", "3.141592653589793", "3.141592653589793"},
		{`"a\"b\\c\n\r\t\b\f\u0001\u001f\u007f<>&\u2028\u2029é😀"`,
			"\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u0001\\u001f\x7f<>&\u2028\u2029é😀\"",
			"a\"b\\c\n\r\t\b\f\x01\x1f\x7f<>&\u2028\u2029é😀"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var n any
			dec := json.NewDecoder(strings.NewReader(tc.in))
			dec.UseNumber()
			if err := dec.Decode(&n); err != nil {
				t.Fatal(err)
			}
			got, err := tmpl.RenderValues(map[string]Value{"x": FromGoValue(n)})
			if err != nil {
				t.Fatal(err)
			}
			if want := tc.tojson + "|" + tc.print; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}
