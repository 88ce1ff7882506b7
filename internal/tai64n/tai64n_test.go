package tai64n

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestKnownEncoding checks FromTime against bytes worked out by hand from the
// definition (label = 2^62 + 10 + Unix seconds, then whitened nanoseconds).
func TestKnownEncoding(t *testing.T) {
	cases := []struct {
		name string
		in   time.Time
		want Timestamp
	}{
		{
			// The Unix epoch: label 2^62 + 10 = 0x400000000000000a, 0 ns.
			name: "epoch",
			in:   time.Unix(0, 0),
			want: Timestamp{0x40, 0, 0, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0},
		},
		{
			// One second before the epoch: label 2^62 + 9.
			name: "before epoch",
			in:   time.Unix(-1, 0),
			want: Timestamp{0x40, 0, 0, 0, 0, 0, 0, 0x09, 0, 0, 0, 0},
		},
		{
			// 2020-01-01T00:00:00Z is Unix 1577836800; plus 1 day (86400 s)
			// and 03:04:05 (11045 s) gives 1577934245. Adding 10 gives
			// 1577934255 = 0x5e0d5daf. 987654321 ns = 58*2^24 + 14578993,
			// whitened to 58*2^24 = 0x3a000000.
			name: "2020-01-02T03:04:05.987654321Z",
			in:   time.Date(2020, 1, 2, 3, 4, 5, 987654321, time.UTC),
			want: Timestamp{0x40, 0, 0, 0, 0x5e, 0x0d, 0x5d, 0xaf, 0x3a, 0, 0, 0},
		},
		{
			// The same instant written in another zone encodes identically.
			name: "same instant, UTC+2",
			in:   time.Date(2020, 1, 2, 5, 4, 5, 987654321, time.FixedZone("x", 2*3600)),
			want: Timestamp{0x40, 0, 0, 0, 0x5e, 0x0d, 0x5d, 0xaf, 0x3a, 0, 0, 0},
		},
		{
			// Largest nanosecond count: 999999999 = 59*2^24 + 10144255,
			// whitened to 59*2^24 = 0x3b000000.
			name: "last nanosecond of the epoch second",
			in:   time.Unix(0, 999999999),
			want: Timestamp{0x40, 0, 0, 0, 0, 0, 0, 0x0a, 0x3b, 0, 0, 0},
		},
	}
	for _, c := range cases {
		if got := FromTime(c.in); got != c.want {
			t.Errorf("%s: FromTime = % x, want % x", c.name, got, c.want)
		}
	}
}

func TestWhitening(t *testing.T) {
	const g = int64(1) << 24
	if Whitening != time.Duration(g) {
		t.Fatalf("Whitening = %v, want 2^24 ns", Whitening)
	}
	cases := []struct{ ns, want int64 }{
		{0, 0},
		{1, 0},
		{g - 1, 0},
		{g, g},
		{g + 1, g},
		{2*g - 1, g},
		{37*g + 12345, 37 * g},
		{999999999, 59 * g},
	}
	for _, c := range cases {
		ts := FromTime(time.Unix(1700000000, c.ns))
		got := ts.Time()
		if got.Unix() != 1700000000 || int64(got.Nanosecond()) != c.want {
			t.Errorf("ns %d: decoded %v (ns %d), want ns %d", c.ns, got, got.Nanosecond(), c.want)
		}
		// The low 24 bits of the nanosecond field are always zero.
		if ts[9] != 0 || ts[10] != 0 || ts[11] != 0 {
			t.Errorf("ns %d: low nanosecond bytes not whitened: % x", c.ns, ts[8:])
		}
	}

	// Every time within one whitening interval encodes identically.
	start := time.Unix(1700000000, 5*g)
	want := FromTime(start)
	for _, d := range []int64{0, 1, 1000, g / 2, g - 1} {
		if got := FromTime(start.Add(time.Duration(d))); got != want {
			t.Errorf("start+%dns = % x, want % x", d, got, want)
		}
	}
	if got := FromTime(start.Add(time.Duration(g))); !got.After(want) {
		t.Errorf("start+2^24ns = % x, not after % x", got, want)
	}
}

func TestAfter(t *testing.T) {
	mk := func(secs uint64, nanos uint32) Timestamp {
		var ts Timestamp
		for i := 0; i < 8; i++ {
			ts[i] = byte(secs >> (56 - 8*i))
		}
		for i := 0; i < 4; i++ {
			ts[8+i] = byte(nanos >> (24 - 8*i))
		}
		return ts
	}
	cases := []struct {
		name string
		a, b Timestamp
		want bool // a.After(b)
	}{
		{"equal", mk(base+5, 1<<24), mk(base+5, 1<<24), false},
		{"zero vs zero", Timestamp{}, Timestamp{}, false},
		{"later second", mk(base+6, 0), mk(base+5, 0), true},
		{"earlier second", mk(base+5, 0), mk(base+6, 0), false},
		{"later nanos", mk(base+5, 2<<24), mk(base+5, 1<<24), true},
		{"earlier nanos", mk(base+5, 1<<24), mk(base+5, 2<<24), false},
		{"later second beats larger nanos", mk(base+6, 0), mk(base+5, 59<<24), true},
		{"earlier second loses to smaller nanos", mk(base+5, 59<<24), mk(base+6, 0), false},
		{"high byte decides", mk(1<<63, 0), mk(1<<63-1, 0xffffffff), true},
		{"anything after zero", mk(0, 1), Timestamp{}, true},
		{"zero after nothing", Timestamp{}, mk(0, 1), false},
	}
	for _, c := range cases {
		if got := c.a.After(c.b); got != c.want {
			t.Errorf("%s: After = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestMonotonic checks that FromTime never goes backwards as time advances,
// and strictly advances once time moves by at least one whitening interval.
func TestMonotonic(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	now := time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
	prev := FromTime(now)
	for i := 0; i < 100000; i++ {
		step := time.Duration(r.Int64N(int64(3 * Whitening)))
		now = now.Add(step)
		cur := FromTime(now)
		if prev.After(cur) {
			t.Fatalf("step %d: went backwards: % x after % x", i, prev, cur)
		}
		if step >= Whitening && !cur.After(prev) {
			t.Fatalf("step %d: +%v did not advance: % x", i, step, cur)
		}
		prev = cur
	}

	// The real clock: consecutive Now calls never decrease (barring a wall
	// clock step during the test), and Now is close to the real time.
	prev = Now()
	for i := 0; i < 1000; i++ {
		cur := Now()
		if prev.After(cur) {
			t.Fatalf("Now went backwards: % x after % x", prev, cur)
		}
		prev = cur
	}
	if d := time.Since(prev.Time()); d < 0 || d > time.Minute {
		t.Errorf("Now decodes to %v, %v from the real time", prev.Time(), d)
	}
}

func TestTimeRoundTrip(t *testing.T) {
	for _, tt := range []time.Time{
		time.Unix(0, 0),
		time.Unix(-86400*365, 3<<24),
		time.Date(2038, 1, 19, 3, 14, 8, 59<<24, time.UTC),
		time.Date(2262, 4, 11, 0, 0, 0, 0, time.UTC),
	} {
		if got := FromTime(tt).Time(); !got.Equal(tt) {
			t.Errorf("FromTime(%v).Time() = %v", tt, got)
		}
	}
}

func BenchmarkNow(b *testing.B) {
	b.ReportAllocs()
	var ts Timestamp
	for b.Loop() {
		ts = Now()
	}
	_ = ts
}
