#define _GNU_SOURCE
#include "sys_shim.h"
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

int sb_set_parent_death_signal(int signal) {
    return prctl(PR_SET_PDEATHSIG, signal, 0, 0, 0);
}

pid_t sb_spawn_agent(const char *path, char *const argv[], char *const envp[], int out_fd) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) return pid;
    /* The child: async-signal-safe calls only. */
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (getppid() != parent) _exit(127); /* the worker died before the line above */
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, 0);
    dup2(out_fd, 1);
    dup2(out_fd, 2);
    close_range(3, ~0U, 0);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    for (int s = 1; s < NSIG; s++) {
        if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_DFL);
    }
    execve(path, argv, envp);
    _exit(127);
}

int sb_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

/* The few NVML entry points used, declared here: no NVIDIA header is needed to build. */
typedef void *sb_nvml_device;
typedef struct { unsigned int gpu, memory; } sb_nvml_utilization;
typedef struct { unsigned long long total, free, used; } sb_nvml_memory;
static struct {
    int (*init)(void);
    int (*count)(unsigned int *);
    int (*handle)(unsigned int, sb_nvml_device *);
    int (*utilization)(sb_nvml_device, sb_nvml_utilization *);
    int (*memory)(sb_nvml_device, sb_nvml_memory *);
    int ready; /* 1 loaded and initialised, -1 absent */
} nvml;
static pthread_once_t nvml_once = PTHREAD_ONCE_INIT;

static void nvml_load(void) {
    nvml.ready = -1;
    void *library = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!library) return;
    nvml.init = (int (*)(void))dlsym(library, "nvmlInit_v2");
    nvml.count = (int (*)(unsigned int *))dlsym(library, "nvmlDeviceGetCount_v2");
    nvml.handle = (int (*)(unsigned int, sb_nvml_device *))dlsym(library, "nvmlDeviceGetHandleByIndex_v2");
    nvml.utilization = (int (*)(sb_nvml_device, sb_nvml_utilization *))dlsym(library, "nvmlDeviceGetUtilizationRates");
    nvml.memory = (int (*)(sb_nvml_device, sb_nvml_memory *))dlsym(library, "nvmlDeviceGetMemoryInfo");
    if (nvml.init && nvml.count && nvml.handle && nvml.utilization && nvml.memory && nvml.init() == 0) nvml.ready = 1;
}

int sb_nvml_sample(sb_gpu_sample *out) {
    pthread_once(&nvml_once, nvml_load);
    if (nvml.ready != 1) return -1;
    unsigned int count = 0;
    if (nvml.count(&count) != 0 || count == 0) return -1;
    unsigned long long percent = 0;
    out->memory_used = 0;
    out->memory_total = 0;
    for (unsigned int i = 0; i < count; i++) {
        sb_nvml_device device;
        sb_nvml_utilization utilization;
        sb_nvml_memory memory;
        if (nvml.handle(i, &device) != 0 || nvml.utilization(device, &utilization) != 0 || nvml.memory(device, &memory) != 0) return -1;
        percent += utilization.gpu;
        out->memory_used += memory.used;
        out->memory_total += memory.total;
    }
    out->utilization_percent = (unsigned int)(percent / count);
    return 0;
}
