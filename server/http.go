package server

import (
	"context"
	"errors"
)

// ServeHTTP serves MCP over streamable HTTP and SSE.
func (a *App) ServeHTTP(ctx context.Context) error {
	return errors.New("--transport http is not available in this build yet")
}
