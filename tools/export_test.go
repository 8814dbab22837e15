package tools

// SetMetaPageRows makes metadata reads page every n rows, so that a test
// sees the paging a large instance needs; it returns the undo.
func SetMetaPageRows(n int) (restore func()) {
	was := metaPageRows
	metaPageRows = n
	return func() { metaPageRows = was }
}

// ForgetMetadata drops every cached dictionary and resolved reference.
func ForgetMetadata() { cachesByDeps.Clear() }
