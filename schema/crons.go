package schema

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Cron is one entry of lunora.yaml's `crons:` block: a function of the root
// shard or the global tier called on a schedule, once per cluster per tick
// (package cron runs them on the global tier's leader).
type Cron struct {
	// Name keys the cron's replicated tick state: renaming a cron starts
	// it afresh.
	Name     string
	Schedule *Schedule
	// Function is a mutation that runs in the root shard or on the global
	// tier; Args are its arguments, bound (BindArgs) when the file is
	// parsed, without TickArg.
	Function string
	Args     map[string]any
	// TickArg, when set, names an int argument of Function that receives
	// the tick's scheduled time in Unix milliseconds: a tick run again
	// (after a leader change) has the same value, so the function can make
	// a rerun a no-op.
	TickArg string
	Line    int

	fnLine, argsLine, tickLine int // for errors found by checkCrons
}

// ShardID is where the cron's function runs: RootShard or GlobalGroup.
func (c *Cron) ShardID(app *App) string {
	if f := app.Function(c.Function); f != nil && f.Global() {
		return GlobalGroup
	}
	return RootShard
}

// MinCronInterval is the shortest @every a cron may have: each tick is
// two writes through the global tier's Raft log.
const MinCronInterval = time.Second

// Schedule is a parsed cron schedule: five calendar fields (minute hour
// day-of-month month day-of-week) in a time zone, or a fixed interval.
type Schedule struct {
	// Spec is the schedule as written.
	Spec string
	// Every is the interval of an @every schedule (0 for a calendar one).
	// Its ticks are the multiples of Every since the Unix epoch, so every
	// node computes the same ticks.
	Every time.Duration
	// Location is the time zone the calendar fields are read in.
	Location *time.Location

	minute, hour, dom, month, dow uint64 // bit i set: value i matches
	// domAny and dowAny record a day field written starting with '*'. As
	// in standard cron, when neither does a day matching either field
	// runs; otherwise a day must match both.
	domAny, dowAny bool
}

// cronField describes one of the five fields.
type cronField struct {
	name     string
	min, max int
	names    []string // names[i] is value min+i (months, weekdays)
}

var cronFields = [5]cronField{
	{name: "minute", min: 0, max: 59},
	{name: "hour", min: 0, max: 23},
	{name: "day of month", min: 1, max: 31},
	{name: "month", min: 1, max: 12, names: []string{"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"}},
	// 7 is Sunday too; it is folded onto 0.
	{name: "day of week", min: 0, max: 7, names: []string{"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}},
}

var cronMacros = map[string]string{
	"@yearly":   "0 0 1 1 *",
	"@annually": "0 0 1 1 *",
	"@monthly":  "0 0 1 * *",
	"@weekly":   "0 0 * * 0",
	"@daily":    "0 0 * * *",
	"@midnight": "0 0 * * *",
	"@hourly":   "0 * * * *",
}

// ParseSchedule parses a schedule: five fields (minute hour day-of-month
// month day-of-week, each *, a value, a range a-b, a step */n, a-b/n or
// a/n, or a comma list of those; JAN-DEC and SUN-SAT by name), a macro
// (@yearly, @monthly, @weekly, @daily, @hourly), or @every <duration> of
// at least MinCronInterval. loc is the zone of the calendar fields (UTC
// when nil).
func ParseSchedule(spec string, loc *time.Location) (*Schedule, error) {
	if loc == nil {
		loc = time.UTC
	}
	s := &Schedule{Spec: spec, Location: loc}
	text := strings.TrimSpace(spec)
	if rest, ok := strings.CutPrefix(text, "@every"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		if err != nil {
			return nil, fmt.Errorf("@every needs a duration such as 30s, 5m or 1h30m: %v", err)
		}
		if d < MinCronInterval {
			return nil, fmt.Errorf("@every %v is shorter than the minimum of %v", d, MinCronInterval)
		}
		if d%time.Millisecond != 0 {
			return nil, fmt.Errorf("@every %v: use a whole number of milliseconds", d)
		}
		s.Every = d
		return s, nil
	}
	if strings.HasPrefix(text, "@") {
		m, ok := cronMacros[strings.ToLower(text)]
		if !ok {
			return nil, fmt.Errorf("unknown schedule %q (five fields, @every <duration>, @hourly, @daily, @weekly, @monthly or @yearly)", text)
		}
		text = m
	}
	fields := strings.Fields(text)
	if len(fields) != 5 {
		return nil, fmt.Errorf("a schedule has 5 fields (minute hour day-of-month month day-of-week), %q has %d", spec, len(fields))
	}
	sets := [5]*uint64{&s.minute, &s.hour, &s.dom, &s.month, &s.dow}
	for i, f := range fields {
		set, err := parseCronField(f, cronFields[i])
		if err != nil {
			return nil, err
		}
		*sets[i] = set
	}
	if s.dow&(1<<7) != 0 {
		s.dow = s.dow&^(1<<7) | 1
	}
	s.domAny = strings.HasPrefix(fields[2], "*")
	s.dowAny = strings.HasPrefix(fields[4], "*")
	if s.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, loc)).IsZero() {
		return nil, fmt.Errorf("schedule %q never runs: no chosen month has the chosen days", spec)
	}
	return s, nil
}

func parseCronField(text string, f cronField) (uint64, error) {
	var set uint64
	for _, part := range strings.Split(text, ",") {
		rng, stepText, hasStep := strings.Cut(part, "/")
		lo, hi := f.min, f.max
		switch {
		case rng == "*":
		case strings.Contains(rng, "-"):
			a, b, _ := strings.Cut(rng, "-")
			var err error
			if lo, err = cronValue(a, f); err != nil {
				return 0, err
			}
			if hi, err = cronValue(b, f); err != nil {
				return 0, err
			}
			if lo > hi {
				return 0, fmt.Errorf("%s range %q runs backwards", f.name, rng)
			}
		default:
			v, err := cronValue(rng, f)
			if err != nil {
				return 0, err
			}
			lo, hi = v, v
			if hasStep { // a/n: from a to the end
				hi = f.max
			}
		}
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepText)
			if err != nil || n < 1 || n > f.max {
				return 0, fmt.Errorf("%s step %q must be a whole number from 1 to %d", f.name, stepText, f.max)
			}
			step = n
		}
		for v := lo; v <= hi; v += step {
			set |= 1 << v
		}
	}
	return set, nil
}

func cronValue(text string, f cronField) (int, error) {
	for i, n := range f.names {
		if strings.EqualFold(text, n) {
			return f.min + i, nil
		}
	}
	v, err := strconv.Atoi(text)
	if err != nil {
		if text == "" {
			return 0, fmt.Errorf("%s: empty value", f.name)
		}
		return 0, fmt.Errorf("%s: %q is not a number%s", f.name, text, nameHint(f))
	}
	if v < f.min || v > f.max {
		return 0, fmt.Errorf("%s %d is out of range (%d-%d)", f.name, v, f.min, f.max)
	}
	return v, nil
}

func nameHint(f cronField) string {
	if f.names == nil {
		return ""
	}
	return " or a name (" + f.names[0] + "-" + f.names[len(f.names)-1] + ")"
}

// cronSearchYears bounds Next's search: the rarest schedule that runs at
// all (February 29th) runs within 8 years.
const cronSearchYears = 9

// Next returns the first tick strictly after after, or the zero time if
// there is none within cronSearchYears (ParseSchedule refuses schedules
// that never run). The result is in s.Location (UTC for @every).
func (s *Schedule) Next(after time.Time) time.Time {
	if s.Every > 0 {
		every := s.Every.Milliseconds()
		ms := after.UnixMilli()
		n := ms - ms%every
		if ms < 0 && ms%every != 0 {
			n -= every
		}
		return time.UnixMilli(n + every).UTC()
	}
	loc := s.Location
	t := after.In(loc).Truncate(time.Minute)
	t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute()+1, 0, 0, loc)
	if !t.After(after) { // a zone whose offset is not whole minutes
		t = t.Add(time.Minute)
	}
	limit := t.Year() + cronSearchYears
	for t.Year() <= limit {
		switch {
		case s.month&(1<<int(t.Month())) == 0:
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, loc)
		case !s.dayMatches(t):
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, loc)
		case s.hour&(1<<t.Hour()) == 0:
			next := time.Date(t.Year(), t.Month(), t.Day(), t.Hour()+1, 0, 0, 0, loc)
			if !next.After(t) { // a clock set back: the hour repeats
				next = t.Truncate(time.Hour).Add(time.Hour)
			}
			t = next
		case s.minute&(1<<t.Minute()) == 0:
			t = t.Add(time.Minute)
		default:
			return t
		}
	}
	return time.Time{}
}

func (s *Schedule) dayMatches(t time.Time) bool {
	dom := s.dom&(1<<t.Day()) != 0
	dow := s.dow&(1<<int(t.Weekday())) != 0
	if s.domAny || s.dowAny {
		return dom && dow
	}
	return dom || dow
}

// Latest returns the last tick in (after, now], or the zero time when
// there is none. It walks forward from the later of after and a window
// before now, widening the window until it holds a tick, so a long
// downtime costs no more than the ticks in the smallest window that has
// one.
func (s *Schedule) Latest(after, now time.Time) time.Time {
	if !now.After(after) {
		return time.Time{}
	}
	if s.Every > 0 {
		t := s.Next(now.Add(-s.Every))
		if t.After(now) || !t.After(after) {
			return time.Time{}
		}
		return t
	}
	for _, w := range []time.Duration{time.Hour, 24 * time.Hour, 32 * 24 * time.Hour, 367 * 24 * time.Hour, cronSearchYears * 367 * 24 * time.Hour} {
		from := now.Add(-w)
		if from.Before(after) {
			from = after
		}
		var last time.Time
		for t := s.Next(from); !t.IsZero() && !t.After(now); t = s.Next(t) {
			last = t
		}
		if !last.IsZero() || !from.After(after) {
			return last
		}
	}
	return time.Time{}
}

func (p *parser) crons(n *yaml.Node) ([]*Cron, error) {
	var out []*Cron
	err := p.mapping(n, "crons", nil, func(name string, k, v *yaml.Node) error {
		c, err := p.cron(name, k, v)
		if err == nil {
			out = append(out, c)
		}
		return err
	})
	return out, err
}

func (p *parser) cron(name string, k, v *yaml.Node) (*Cron, error) {
	if !funcNameRe.MatchString(name) || len(name) > 128 {
		return nil, p.errf(k, "cron name %q must be up to 128 characters of identifiers joined by ':' (e.g. rooms:cleanup)", name)
	}
	c := &Cron{Name: name, Line: k.Line}
	var schedNode, tzNode *yaml.Node
	var schedText, tz string
	var argsNode, fnNode *yaml.Node
	err := p.mapping(v, "cron "+name, []string{"schedule", "function", "args", "timezone", "tick_arg"}, func(key string, k, v *yaml.Node) error {
		var err error
		switch key {
		case "schedule":
			schedNode = v
			schedText, err = p.scalar(v, "schedule of cron "+name)
		case "function":
			fnNode = v
			c.Function, err = p.scalar(v, "function of cron "+name)
		case "args":
			argsNode = v
			if v.Kind != yaml.MappingNode {
				err = p.errf(v, "cron %s: args must be a mapping of argument names to values", name)
			}
		case "timezone":
			tzNode = v
			tz, err = p.scalar(v, "timezone of cron "+name)
		case "tick_arg":
			c.tickLine = v.Line
			c.TickArg, err = p.scalar(v, "tick_arg of cron "+name)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if schedNode == nil {
		return nil, p.errf(k, "cron %s: schedule is required (e.g. \"*/5 * * * *\" or \"@every 1m\")", name)
	}
	if fnNode == nil {
		return nil, p.errf(k, "cron %s: function is required", name)
	}
	loc := time.UTC
	if tzNode != nil {
		if loc, err = time.LoadLocation(tz); err != nil || tz == "" || strings.EqualFold(tz, "local") {
			return nil, p.errf(tzNode, "cron %s: unknown timezone %q (an IANA name such as UTC or Europe/Paris)", name, tz)
		}
	}
	if c.Schedule, err = ParseSchedule(schedText, loc); err != nil {
		return nil, p.errf(schedNode, "cron %s: %v", name, err)
	}
	if c.Schedule.Every > 0 && tzNode != nil {
		return nil, p.errf(tzNode, "cron %s: an @every schedule has no time zone; drop timezone", name)
	}
	if argsNode != nil {
		c.Args = map[string]any{}
		err := p.mapping(argsNode, "args of cron "+name, nil, func(arg string, k, v *yaml.Node) error {
			var val any
			if v.Kind != yaml.ScalarNode || v.Decode(&val) != nil {
				return p.errf(v, "cron %s: argument %s must be a scalar value", name, arg)
			}
			if i, ok := val.(int); ok {
				val = int64(i)
			}
			c.Args[arg] = val
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	c.argsLine = fnNode.Line
	if argsNode != nil {
		c.argsLine = argsNode.Line
	}
	c.fnLine = fnNode.Line
	return c, nil
}

// checkCrons validates what a cron shares with the functions: the function
// exists, is a mutation of the root shard or the global tier, and takes
// the args given.
func (a *App) checkCrons(file string) error {
	fail := func(line int, format string, args ...any) error {
		return &LineError{File: file, Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	for _, c := range a.Crons {
		f := a.Function(c.Function)
		switch {
		case f == nil:
			return fail(c.fnLine, "cron %s: unknown function %q", c.Name, c.Function)
		case f.ShardBy != RootShard && f.ShardBy != GlobalGroup:
			return fail(c.fnLine, "cron %s: function %s runs in the shards of %s; crons run on the root shard or the global tier (a function without shard_by, or with global: true)", c.Name, f.Name, f.ShardBy)
		case f.Kind != Mutation:
			return fail(c.fnLine, "cron %s: function %s is a query; a cron calls a mutation (a query's result would go nowhere)", c.Name, f.Name)
		}
		if c.TickArg != "" {
			arg := f.Arg(c.TickArg)
			if arg == nil || arg.Type != Int {
				return fail(c.tickLine, "cron %s: tick_arg %q must name an int argument of %s", c.Name, c.TickArg, f.Name)
			}
			if _, ok := c.Args[c.TickArg]; ok {
				return fail(c.argsLine, "cron %s: argument %s is the tick_arg; the runner sets it", c.Name, c.TickArg)
			}
		}
		probe := make(map[string]any, len(c.Args)+1)
		for k, v := range c.Args {
			probe[k] = v
		}
		if c.TickArg != "" {
			probe[c.TickArg] = int64(0)
		}
		bound, err := f.BindArgs(probe)
		if err != nil {
			return fail(c.argsLine, "cron %s: %v", c.Name, err)
		}
		delete(bound, c.TickArg)
		c.Args = bound
	}
	return nil
}
