// Command upwatch is upwatch's command line: `upwatch up` runs the whole
// system on one machine; other subcommands manage monitors and the schema.
package main

import (
	"context"
	"os"

	"upwatch.dev/services/upwatch/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
