int svc_engine(int x);
int core_util(int x);
int api_route(int x);
int api_route(int x) { return svc_engine(x) + core_util(x); }
