package cli

import (
	"context"

	"upwatch.dev/services/upwatch/config"
	"upwatch.dev/services/upwatch/up"
	"upwatch.dev/shared/monitor"
	"upwatch.dev/shared/service"
)

func runUp(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "up", "up [--data-dir DIR] [--config monitors.yaml] [--http ADDR] [--nats-listen ADDR] [--region R]")
	var (
		o                   up.Options
		configPath          string
		logLevel, logFormat string
	)
	fs.StringVar(&o.DataDir, "data-dir", "./upwatch-data", "directory for NATS and PostgreSQL data; kept across restarts")
	fs.StringVar(&configPath, "config", "", "YAML file of monitors to create or update by name at start")
	fs.StringVar(&o.HTTPAddr, "http", "127.0.0.1:8080", "address of the API, dashboard, /healthz and /metrics")
	fs.StringVar(&o.NATSListen, "nats-listen", "127.0.0.1:4222", "address of the embedded NATS server (for the nats CLI)")
	fs.StringVar(&o.Region, "region", service.Env("REGION", monitor.DefaultRegion), "region the ticker and checker serve (env REGION)")
	fs.StringVar(&o.DatabaseURL, "database-url", service.Env("DATABASE_URL", ""),
		"use this PostgreSQL instead of a private one in the data directory (env DATABASE_URL)")
	fs.StringVar(&logLevel, "log-level", service.Env("LOG_LEVEL", "info"), "debug, info, warn or error (env LOG_LEVEL)")
	fs.StringVar(&logFormat, "log-format", service.Env("LOG_FORMAT", "text"), "text or json (env LOG_FORMAT)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{msg: "unexpected arguments: " + fs.Arg(0)}
	}
	logger, err := service.NewLogger(logLevel, logFormat)
	if err != nil {
		return usageError{msg: err.Error()}
	}
	// Read the monitors file before starting anything: a typo must not
	// cost a PostgreSQL start to find out.
	if configPath != "" {
		o.Monitors, err = config.LoadFile(configPath)
		if err != nil {
			return err
		}
	}
	o.Out = e.stdout
	o.Logger = logger
	return up.Run(ctx, o)
}
