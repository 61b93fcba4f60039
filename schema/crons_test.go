package schema_test

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/schema"
)

func utc(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04:05.999", s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestScheduleNext(t *testing.T) {
	cases := []struct {
		spec, after, want string
	}{
		{"*/5 * * * *", "2024-01-01 10:03:00", "2024-01-01 10:05:00"},
		{"*/5 * * * *", "2024-01-01 10:05:00", "2024-01-01 10:10:00"}, // strictly after
		{"* * * * *", "2024-01-01 10:00:59.5", "2024-01-01 10:01:00"},
		{"0 * * * *", "2024-01-01 10:00:30", "2024-01-01 11:00:00"},
		{"@hourly", "2024-01-01 23:30:00", "2024-01-02 00:00:00"},
		{"30 2 * * *", "2024-01-01 03:00:00", "2024-01-02 02:30:00"},
		{"@daily", "2024-12-31 00:00:00", "2025-01-01 00:00:00"},
		{"@yearly", "2024-12-31 23:59:59", "2025-01-01 00:00:00"},
		{"@monthly", "2024-01-31 12:00:00", "2024-02-01 00:00:00"},
		{"@weekly", "2024-01-01 00:00:00", "2024-01-07 00:00:00"}, // 2024-01-01 is a Monday
		// Feb 29 only in leap years; 2100 is not one.
		{"0 0 29 2 *", "2024-03-01 00:00:00", "2028-02-29 00:00:00"},
		{"0 0 29 2 *", "2096-03-01 00:00:00", "2104-02-29 00:00:00"},
		// Month ends: a 31st skips the months without one.
		{"0 0 31 * *", "2024-04-01 00:00:00", "2024-05-31 00:00:00"},
		{"0 0 31 * *", "2024-05-31 00:00:00", "2024-07-31 00:00:00"},
		{"0 0 30 * *", "2023-01-30 00:00:00", "2023-03-30 00:00:00"},
		{"0 0 31 12 *", "2024-12-31 00:00:00", "2025-12-31 00:00:00"},
		{"0 0 * 2 *", "2024-02-29 00:00:00", "2025-02-01 00:00:00"},
		// Both day fields restricted: either matches (Friday or the 13th).
		{"0 0 13 * FRI", "2024-01-01 00:00:00", "2024-01-05 00:00:00"},
		{"0 0 13 * FRI", "2024-01-12 00:00:00", "2024-01-13 00:00:00"},
		{"0 0 13 * FRI", "2024-01-13 00:00:00", "2024-01-19 00:00:00"},
		// One day field restricted: it alone decides.
		{"0 0 * * MON", "2024-01-02 00:00:00", "2024-01-08 00:00:00"},
		{"0 0 13 * *", "2024-01-02 00:00:00", "2024-01-13 00:00:00"},
		{"0 0 */10 * *", "2024-01-02 00:00:00", "2024-01-11 00:00:00"},
		// A field starting with * makes the days AND, as in standard cron:
		// the 1st, 11th, 21st, 31st that are Mondays.
		{"0 0 */10 * MON", "2024-01-02 00:00:00", "2024-03-11 00:00:00"},
		// 7 and 0 are both Sunday.
		{"5 4 * * 7", "2024-01-06 23:59:00", "2024-01-07 04:05:00"},
		{"5 4 * * sun", "2024-01-06 23:59:00", "2024-01-07 04:05:00"},
		// Ranges with steps, names, lists.
		{"0 9-17/4 * * MON-FRI", "2024-01-05 17:00:00", "2024-01-08 09:00:00"},
		{"0 9-17/4 * * MON-FRI", "2024-01-08 09:00:00", "2024-01-08 13:00:00"},
		{"15 10 * JAN,jul *", "2024-02-01 00:00:00", "2024-07-01 10:15:00"},
		{"0,30 * * * *", "2024-01-01 10:29:59", "2024-01-01 10:30:00"},
		{"10/20 * * * *", "2024-01-01 10:31:00", "2024-01-01 10:50:00"},
		{"59 23 31 DEC *", "2024-06-15 00:00:00", "2024-12-31 23:59:00"},
		// @every: multiples of the interval since the Unix epoch.
		{"@every 30s", "2024-01-01 10:00:10", "2024-01-01 10:00:30"},
		{"@every 30s", "2024-01-01 10:00:30", "2024-01-01 10:01:00"},
		{"@every 1h30m", "1970-01-01 00:00:00", "1970-01-01 01:30:00"},
		{"@every 1s", "2024-01-01 10:00:00.999", "2024-01-01 10:00:01"},
	}
	for _, tc := range cases {
		s, err := schema.ParseSchedule(tc.spec, nil)
		if err != nil {
			t.Errorf("%q: %v", tc.spec, err)
			continue
		}
		got := s.Next(utc(tc.after))
		if want := utc(tc.want); !got.Equal(want) {
			t.Errorf("%q after %s: got %s, want %s", tc.spec, tc.after, got, want)
		}
	}
}

func TestScheduleTimezone(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Skip("no tz database:", err)
	}
	s, err := schema.ParseSchedule("0 9 * * *", ny)
	if err != nil {
		t.Fatal(err)
	}
	// 09:00 EST is 14:00 UTC; in July (EDT) 13:00 UTC.
	if got := s.Next(utc("2024-01-01 00:00:00")); !got.Equal(utc("2024-01-01 14:00:00")) {
		t.Errorf("January: %s", got.UTC())
	}
	if got := s.Next(utc("2024-07-01 00:00:00")); !got.Equal(utc("2024-07-01 13:00:00")) {
		t.Errorf("July: %s", got.UTC())
	}
	// 02:30 does not exist on 2024-03-10 in New York: that day has no
	// tick, the next is 02:30 EDT the day after.
	s, _ = schema.ParseSchedule("30 2 * * *", ny)
	if got := s.Next(utc("2024-03-10 05:00:00")); !got.Equal(utc("2024-03-11 06:30:00")) {
		t.Errorf("spring forward: %s", got.UTC())
	}
	// 01:30 happens twice on 2024-11-03: once in EDT, once in EST.
	s, _ = schema.ParseSchedule("30 1 * * *", ny)
	first := s.Next(utc("2024-11-03 04:00:00"))
	second := s.Next(first)
	if !first.Equal(utc("2024-11-03 05:30:00")) || !second.Equal(utc("2024-11-03 06:30:00")) {
		t.Errorf("fall back: %s then %s", first.UTC(), second.UTC())
	}
}

func TestScheduleLatest(t *testing.T) {
	cases := []struct {
		spec, after, now, want string // want "" for none
	}{
		{"@every 1s", "2024-01-01 10:00:00", "2024-01-01 10:00:05.5", "2024-01-01 10:00:05"},
		{"@every 1s", "2024-01-01 10:00:05", "2024-01-01 10:00:05.9", ""},
		{"@every 1s", "2024-01-01 10:00:00", "2024-01-01 10:00:01", "2024-01-01 10:00:01"},
		{"@every 1m", "2020-01-01 00:00:00", "2024-01-01 10:00:30", "2024-01-01 10:00:00"},
		{"0 0 * * *", "2024-01-01 00:00:00", "2024-03-10 12:00:00", "2024-03-10 00:00:00"},
		{"0 0 1 1 *", "2020-01-01 00:00:00", "2024-06-01 00:00:00", "2024-01-01 00:00:00"},
		{"* * * * *", "2024-01-01 00:00:00", "2024-01-01 00:00:30", ""},
		{"* * * * *", "2024-01-01 00:00:00", "2024-01-01 00:05:00", "2024-01-01 00:05:00"},
		{"* * * 1 *", "2023-06-01 00:00:00", "2024-12-01 00:00:00", "2024-01-31 23:59:00"},
		{"0 0 29 2 *", "2016-03-01 00:00:00", "2024-02-28 00:00:00", "2020-02-29 00:00:00"},
		{"0 0 29 2 *", "2020-02-29 00:00:00", "2024-02-28 00:00:00", ""},
	}
	for _, tc := range cases {
		s, err := schema.ParseSchedule(tc.spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := s.Latest(utc(tc.after), utc(tc.now))
		switch {
		case tc.want == "" && !got.IsZero():
			t.Errorf("%q in (%s, %s]: got %s, want none", tc.spec, tc.after, tc.now, got)
		case tc.want != "" && !got.Equal(utc(tc.want)):
			t.Errorf("%q in (%s, %s]: got %s, want %s", tc.spec, tc.after, tc.now, got, tc.want)
		}
	}
}

func TestScheduleErrors(t *testing.T) {
	for spec, want := range map[string]string{
		"* * * *":          "has 4",
		"* * * * * *":      "has 6",
		"60 * * * *":       "minute 60 is out of range (0-59)",
		"* 24 * * *":       "hour 24 is out of range",
		"* * 0 * *":        "day of month 0 is out of range (1-31)",
		"* * * 13 *":       "month 13 is out of range",
		"* * * * 8":        "day of week 8 is out of range",
		"*/0 * * * *":      "step",
		"5-1 * * * *":      "runs backwards",
		"x * * * *":        `"x" is not a number`,
		"* * * FOO *":      "or a name (JAN-DEC)",
		"1,,2 * * * *":     "empty value",
		"@every 500ms":     "shorter than the minimum of 1s",
		"@every":           "needs a duration",
		"@every soon":      "needs a duration",
		"@weekdays":        "unknown schedule",
		"0 0 30 2 *":       "never runs",
		"0 0 31 4,6,9 *":   "never runs",
		"@every 1500100us": "whole number of milliseconds",
	} {
		_, err := schema.ParseSchedule(spec, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error containing %q", spec, err, want)
		}
	}
	// Feb 30 with a weekday: the weekday still runs it.
	if _, err := schema.ParseSchedule("0 0 30 2 MON", nil); err != nil {
		t.Errorf("0 0 30 2 MON: %v", err)
	}
}

const cronApp = `tables:
  log:
    global: true
    columns: {id: int, tick: int, note: text}
    primary_key: [id]
  jobs:
    columns: {id: int, days: int}
    primary_key: [id]
  items:
    shard_by: k
    columns: {k: text, v: int}
    primary_key: [k]
functions:
  log:add:
    kind: mutation
    global: true
    args: {tick: int, note: {type: text, default: none}}
    sql: ["INSERT INTO log (id, tick, note) VALUES (:tick, :tick, :note)"]
  jobs:cleanup:
    kind: mutation
    args: {days: int}
    sql: [DELETE FROM jobs WHERE days > :days]
  jobs:list:
    kind: query
    sql: [SELECT id FROM jobs]
  items:touch:
    kind: mutation
    shard_by: k
    args: {k: text}
    sql: [UPDATE items SET v = v + 1 WHERE k = :k]
crons:
  cleanup:
    schedule: "*/5 * * * *"
    function: jobs:cleanup
    args: {days: 30}
    timezone: Europe/Paris
  beat:
    schedule: "@every 1s"
    function: log:add
    tick_arg: tick
`

func TestCronsParse(t *testing.T) {
	app, err := schema.Parse("app.yaml", []byte(cronApp))
	if err != nil {
		t.Fatal(err)
	}
	if len(app.Crons) != 2 {
		t.Fatalf("crons = %v", app.Crons)
	}
	c := app.Crons[0]
	if c.Name != "cleanup" || c.Function != "jobs:cleanup" || c.Args["days"] != int64(30) || c.Line != 32 ||
		c.Schedule.Location.String() != "Europe/Paris" || c.ShardID(app) != schema.RootShard {
		t.Errorf("cleanup = %+v", c)
	}
	b := app.Crons[1]
	if b.Schedule.Every != time.Second || b.TickArg != "tick" || b.Args["note"] != "none" || len(b.Args) != 1 || b.ShardID(app) != schema.GlobalGroup {
		t.Errorf("beat = %+v args %v", b, b.Args)
	}
}

func TestCronsInvalid(t *testing.T) {
	cases := []struct {
		name, old, new string
		line           int
		want           string
	}{
		{"field count", `"*/5 * * * *"`, `"*/5 * * *"`, 33, "a schedule has 5 fields"},
		{"out of range", `"*/5 * * * *"`, `"61 * * * *"`, 33, "minute 61 is out of range"},
		{"every too short", `"@every 1s"`, `"@every 100ms"`, 38, "shorter than the minimum of 1s"},
		{"unknown function", "function: jobs:cleanup", "function: jobs:nope", 34, `unknown function "jobs:nope"`},
		{"sharded function", "function: jobs:cleanup\n    args: {days: 30}", "function: items:touch\n    args: {k: a}", 34, "crons run on the root shard or the global tier"},
		{"query", "function: jobs:cleanup\n    args: {days: 30}", "function: jobs:list", 34, "is a query"},
		{"missing arg", "    args: {days: 30}\n", "", 34, `missing required argument "days"`},
		{"bad arg type", "args: {days: 30}", "args: {days: soon}", 35, `argument "days"`},
		{"unknown arg", "args: {days: 30}", "args: {days: 30, weeks: 2}", 35, `no argument "weeks"`},
		{"timezone", "timezone: Europe/Paris", "timezone: Mars/Olympus", 36, `unknown timezone "Mars/Olympus"`},
		{"timezone with every", "tick_arg: tick", "tick_arg: tick\n    timezone: UTC", 41, "no time zone"},
		{"tick_arg not int", "tick_arg: tick", "tick_arg: note", 40, `tick_arg "note" must name an int argument`},
		{"tick_arg given", "tick_arg: tick", "tick_arg: tick\n    args: {tick: 3}", 41, "the runner sets it"},
		{"no schedule", `    schedule: "@every 1s"` + "\n", "", 37, "schedule is required"},
		{"no function", "    function: log:add\n", "", 37, "function is required"},
		{"unknown key", "tick_arg: tick", "tick_arg: tick\n    every: 5", 41, `unknown key "every"`},
		{"bad name", "  beat:", "  beat now:", 37, "cron name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			text := strings.Replace(cronApp, tc.old, tc.new, 1)
			if text == cronApp {
				t.Fatal("the case changes nothing")
			}
			_, err := schema.Parse("app.yaml", []byte(text))
			var le *schema.LineError
			if !errors.As(err, &le) {
				t.Fatalf("want *LineError, got %v", err)
			}
			if le.Line != tc.line || !strings.Contains(le.Msg, tc.want) {
				t.Fatalf("got %q (line %d), want line %d containing %q", err, le.Line, tc.line, tc.want)
			}
		})
	}
}

// TestReadmeCronsParses: the example of README.md's Crons section parses
// with a function it can call.
func TestReadmeCronsParses(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "## Crons")
	if i < 0 {
		t.Fatal(`README.md has no "## Crons" section`)
	}
	s = s[i:]
	j := strings.Index(s, "```yaml\n")
	if j < 0 {
		t.Fatal("the Crons section has no yaml block")
	}
	s = s[j+len("```yaml\n"):]
	s = s[:strings.Index(s, "```")]
	app, err := schema.Parse("README.md", []byte(`tables:
  rooms:
    columns: {id: text, idle_days: int}
    primary_key: [id]
functions:
  rooms:cleanup:
    kind: mutation
    args: {days: int, tick: int}
    sql: ["DELETE FROM rooms WHERE idle_days > :days AND :tick > 0"]
`+s))
	if err != nil {
		t.Fatal(err)
	}
	if len(app.Crons) != 1 || app.Crons[0].Name != "cleanup" || app.Crons[0].TickArg != "tick" {
		t.Fatalf("crons = %+v", app.Crons)
	}
}

// FuzzSchedule: a schedule either is refused or has a next tick after any
// time, on a minute (calendar) or on its interval (@every), and Latest
// never returns a time outside its window.
func FuzzSchedule(f *testing.F) {
	for _, s := range []string{"*/5 * * * *", "0 0 29 2 *", "0 0 13 * FRI", "@every 90s", "@daily", "1-5/2,7 */3 1,15 * MON-FRI", "5- * * * *", "-1 * * * *", "0 0 31 4 *"} {
		f.Add(s, int64(1700000000000))
	}
	f.Fuzz(func(t *testing.T, spec string, afterMs int64) {
		s, err := schema.ParseSchedule(spec, nil)
		if err != nil {
			return
		}
		afterMs %= 1 << 42 // within a few hundred years of the epoch
		after := time.UnixMilli(afterMs)
		next := s.Next(after)
		if next.IsZero() || !next.After(after) {
			t.Fatalf("%q: next after %v is %v", spec, after, next)
		}
		if s.Every == 0 && (next.Second() != 0 || next.Nanosecond() != 0) {
			t.Fatalf("%q: next %v is not on a minute", spec, next)
		}
		if s.Every > 0 && next.UnixMilli()%s.Every.Milliseconds() != 0 {
			t.Fatalf("%q: next %v is not on the interval", spec, next)
		}
		now := next.Add(time.Hour)
		if l := s.Latest(after, now); !l.IsZero() && (!l.After(after) || l.After(now) || l.Before(next)) {
			t.Fatalf("%q: latest in (%v, %v] is %v (next %v)", spec, after, now, l, next)
		}
	})
}
