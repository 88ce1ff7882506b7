package server

// SyncForTest waits until the world shows every store write made before
// the call (a pass of the worker that started after it).
func (s *Server) SyncForTest() error { return s.sync() }
