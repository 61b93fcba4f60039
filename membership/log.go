package membership

import (
	"context"
	"log"
	"log/slog"
	"strings"
)

// memberlistLogger adapts memberlist's *log.Logger output ("[LEVEL]
// memberlist: message" lines) to slog, at debug level: memberlist is chatty
// about transient conditions (failed probes while a peer shuts down, refuted
// suspicions) that this package already reports as status changes.
func memberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(logWriter{l}, "", 0)
}

type logWriter struct{ l *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	ctx := context.Background()
	if !w.l.Enabled(ctx, slog.LevelDebug) {
		return len(p), nil
	}
	line := strings.TrimSpace(string(p))
	level := ""
	if strings.HasPrefix(line, "[") {
		if i := strings.IndexByte(line, ']'); i > 0 {
			level = line[1:i]
			line = strings.TrimSpace(line[i+1:])
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	attrs := []slog.Attr{slog.String("lib", "memberlist")}
	if level != "" {
		attrs = append(attrs, slog.String("lib_level", level))
	}
	w.l.LogAttrs(ctx, slog.LevelDebug, line, attrs...)
	return len(p), nil
}
