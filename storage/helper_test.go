package storage

const helperEnv = "STORAGE_TEST_HELPER_DIR"

func runHelper() int { return 0 }
