package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/warrenmesh/warren/internal/control/admin"
)

// Tables and JSON for `warren admin` (and `warren server apikey list`).

func printJSON(stdout, stderr io.Writer, who string, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", who, err)
		return 1
	}
	return 0
}

func table(w io.Writer, header string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = printable(c) // names and values come from nodes and admins
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
}

// when shows a time in local time to the second; "-" if unset.
func when(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// expiry shows an expiration: "never", "expired <time>" or the time.
func expiry(t *time.Time, expired bool) string {
	switch {
	case t == nil:
		return "never"
	case expired:
		return "expired " + when(t)
	}
	return when(t)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printUsers(w io.Writer, us []admin.User) {
	rows := make([][]string, 0, len(us))
	for _, u := range us {
		rows = append(rows, []string{strconv.FormatInt(u.ID, 10), u.Name, when(&u.Created)})
	}
	table(w, "ID\tNAME\tCREATED", rows)
}

func printAuthKeys(w io.Writer, ks []admin.AuthKey) {
	rows := make([][]string, 0, len(ks))
	for _, k := range ks {
		rows = append(rows, []string{strconv.FormatInt(k.ID, 10), k.Prefix, k.User, tagsCell(k.Tags), yesNo(k.Reusable), yesNo(k.Ephemeral),
			strconv.FormatInt(k.UsedCount, 10), expiry(k.Expiration, k.Expired), when(&k.Created)})
	}
	table(w, "ID\tPREFIX\tUSER\tTAGS\tREUSABLE\tEPHEMERAL\tUSED\tEXPIRATION\tCREATED", rows)
}

func printNodes(w io.Writer, ns []admin.Node) {
	rows := make([][]string, 0, len(ns))
	for _, n := range ns {
		seen := when(n.LastSeen)
		if n.Online {
			seen = "now"
		}
		rows = append(rows, []string{strconv.FormatInt(n.ID, 10), n.Name, n.User, tagsCell(n.Tags), dashIfEmpty(n.Hostname),
			dashIfEmpty(strings.Join(n.Addresses, ",")), yesNo(n.Online), seen, nodeExpiry(n), yesNo(n.Ephemeral)})
	}
	table(w, "ID\tNAME\tUSER\tTAGS\tHOSTNAME\tADDRESSES\tONLINE\tLAST SEEN\tEXPIRY\tEPHEMERAL", rows)
}

// nodeExpiry is a node's EXPIRY cell; a node joined by sign-in that waits
// for an admin says so there.
func nodeExpiry(n admin.Node) string {
	if n.Interactive && !n.Approved {
		return "awaiting approval"
	}
	return expiry(n.Expiry, n.Expired)
}

// tagsCell is a node's or key's tags, comma-separated, "-" for none.
func tagsCell(tags []string) string { return dashIfEmpty(strings.Join(tags, ",")) }

func printAPIKeys(w io.Writer, ks []admin.APIKey) {
	rows := make([][]string, 0, len(ks))
	for _, k := range ks {
		rows = append(rows, []string{strconv.FormatInt(k.ID, 10), k.Prefix, dashIfEmpty(k.Scope), expiry(k.Expiration, k.Expired), when(k.LastUsed), when(&k.Created)})
	}
	table(w, "ID\tPREFIX\tSCOPE\tEXPIRATION\tLAST USED\tCREATED", rows)
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}
