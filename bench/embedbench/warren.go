package main

import (
	"context"

	"github.com/warrenmesh/warren/node"
)

// Warren's embedded node.
type warrenNode struct{ *node.Node }

func (w warrenNode) Up(ctx context.Context) error {
	_, err := w.Node.Up(ctx)
	return err
}

func (w warrenNode) Addr4() string {
	for _, a := range w.Addrs() {
		if a.Is4() {
			return a.String()
		}
	}
	return ""
}

func init() {
	newEmbedded = func(dir, serverURL, authKey, hostname string) (embedded, error) {
		n, err := node.New(node.Options{Dir: dir, ServerURL: serverURL, AuthKey: authKey, Hostname: hostname})
		if err != nil {
			return nil, err
		}
		return warrenNode{n}, nil
	}
}
