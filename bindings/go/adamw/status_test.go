package adamw

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The Go status list is kept by hand; this test holds it to the C header, which is generated
// from the library's one definition of the statuses: the same names, the same numbers, an Err
// value for every failure, and String() giving the C name.
func TestStatusesMatchTheHeader(t *testing.T) {
	header, err := os.ReadFile(checkout("include", "adamw.h"))
	if err != nil {
		t.Fatal(err)
	}
	source, err := os.ReadFile("adamw.go")
	if err != nil {
		t.Fatal(err)
	}
	key := func(name string) string { return strings.ToUpper(strings.ReplaceAll(name, "_", "")) }
	inHeader := map[string]int{}
	for _, m := range regexp.MustCompile(`\bADAMW_STATUS_([A-Z0-9_]+) = (\d+)`).FindAllStringSubmatch(string(header), -1) {
		n, _ := strconv.Atoi(m[2])
		inHeader[m[1]] = n
	}
	inGo := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^\s*Status([A-Za-z0-9]+)\s+Status = (\d+)`).FindAllStringSubmatch(string(source), -1) {
		n, _ := strconv.Atoi(m[2])
		inGo[key(m[1])] = n
	}
	errValues := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*Err([A-Za-z0-9]+)\s*= &Error\{Status: Status([A-Za-z0-9]+)\}`).FindAllStringSubmatch(string(source), -1) {
		if m[1] == m[2] {
			errValues[key(m[1])] = true
		}
	}
	if len(inHeader) < 20 {
		t.Fatalf("found only %d statuses in adamw.h", len(inHeader))
	}
	if len(inGo) != len(inHeader) {
		t.Errorf("adamw.go has %d statuses, adamw.h %d", len(inGo), len(inHeader))
	}
	for name, n := range inHeader {
		got, ok := inGo[key(name)]
		if !ok || got != n {
			t.Errorf("ADAMW_STATUS_%s = %d: adamw.go has %d (present: %v)", name, n, got, ok)
		}
		if name != "OK" && !errValues[key(name)] {
			t.Errorf("ADAMW_STATUS_%s has no Err value in adamw.go", name)
		}
		if s := Status(n).String(); s != "ADAMW_STATUS_"+name {
			t.Errorf("Status(%d).String() = %q, want ADAMW_STATUS_%s", n, s, name)
		}
	}
}
