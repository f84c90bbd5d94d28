package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"go.yaml.in/yaml/v3"
)

// format is an output format of -o.
type format string

const (
	formatTable format = "table"
	formatJSON  format = "json"
	formatYAML  format = "yaml"
)

// formats are the valid -o values, in the order help lists them.
var formats = []format{formatTable, formatJSON, formatYAML}

func formatList() string {
	names := make([]string, len(formats))
	for i, f := range formats {
		names[i] = string(f)
	}
	return strings.Join(names, ", ")
}

func parseFormat(s string) (format, error) {
	for _, f := range formats {
		if string(f) == s {
			return f, nil
		}
	}
	return "", usagef("-o %q: unknown output format; valid formats are %s", s, formatList())
}

// document is what a command prints: JSON and YAML encode it (its json
// and yaml tags are the shape scripts rely on), the table format calls
// writeTable.
type document interface {
	writeTable(w io.Writer) error
}

// printDoc is the one printer every command goes through.
func printDoc(w io.Writer, f format, doc document) error {
	switch f {
	case formatJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(doc)
	case formatYAML:
		enc := yaml.NewEncoder(w)
		enc.SetIndent(2)
		if err := enc.Encode(doc); err != nil {
			return err
		}
		return enc.Close()
	default:
		return doc.writeTable(w)
	}
}

// table writes aligned columns; flush it at the end.
func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

// row writes one tab-separated row.
func row(w io.Writer, cells ...any) {
	for i, c := range cells {
		if i > 0 {
			fmt.Fprint(w, "\t")
		}
		fmt.Fprint(w, c)
	}
	fmt.Fprintln(w)
}

// humanBytes writes a size in binary units; 0 is "-" (unknown or none).
func humanBytes(n uint64) string {
	if n == 0 {
		return "-"
	}
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n)/1024, 0
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	for v >= 1024 && unit < len(units)-1 {
		v /= 1024
		unit++
	}
	return fmt.Sprintf("%.1f %s", v, units[unit])
}

// dash shows an empty string as "-".
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// expertRanges writes sorted expert ids compactly: "0-3 7 9-10".
func expertRanges(ids []uint32) string {
	if len(ids) == 0 {
		return "-"
	}
	ids = slices.Clone(ids)
	slices.Sort(ids)
	var b strings.Builder
	for i := 0; i < len(ids); {
		j := i
		for j+1 < len(ids) && ids[j+1] == ids[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", ids[i], ids[j])
		} else {
			fmt.Fprintf(&b, "%d", ids[i])
		}
		i = j + 1
	}
	return b.String()
}
