/* A core file that calls the api layer: check-layers must refuse it. */
int api_handler(int x);
int core_helper(int x);
int core_helper(int x) { return api_handler(x) + 1; }
