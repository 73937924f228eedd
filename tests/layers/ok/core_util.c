/* Calls that point down only: check-layers must pass. */
int core_util(int x);
int core_util(int x) { return x + 1; }
