package bench

import (
	"testing"
	"time"
)

func TestParsePSTime(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"0:00.12":     120 * time.Millisecond,
		"1:02.50":     62500 * time.Millisecond,
		"01:02:03":    time.Hour + 2*time.Minute + 3*time.Second,
		"2-01:00:00":  49 * time.Hour,
		"00:00:01.00": time.Second,
	} {
		got, err := parsePSTime(in)
		if err != nil || got != want {
			t.Errorf("parsePSTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parsePSTime("soon"); err == nil {
		t.Error("parsePSTime(soon): no error")
	}
}
