int api_handler(int x);
int api_handler(int x) { return x * 2; }
