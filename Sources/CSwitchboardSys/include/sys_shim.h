#ifndef SWITCHBOARD_SYS_SHIM_H
#define SWITCHBOARD_SYS_SHIM_H
#include <sys/types.h>

/* prctl is variadic and not imported into Swift. Asks the kernel to send `signal` to this process when its
   parent dies, so the children of `switchboard dev` never outlive it. Returns 0 or -1 (errno set). */
int sb_set_parent_death_signal(int signal);

/* Starts `path` with `argv` and `envp` as an agent process: in a process group of its own (so it is killed
   with everything it starts), stdin from /dev/null, stdout and stderr on `out_fd`, every other descriptor
   closed, signals at their defaults, and SIGKILL when the thread that called this exits (PR_SET_PDEATHSIG:
   call it from a thread that lives as long as the process, so agents never outlive their worker).
   fork() then only async-signal-safe calls until execve. Returns the pid, or -1 (errno set). A failed
   execve exits the child with 127. */
pid_t sb_spawn_agent(const char *path, char *const argv[], char *const envp[], int out_fd);
/* pipe2(fds, O_CLOEXEC): both ends closed on exec, so no other child inherits them. 0 or -1 (errno set). */
int sb_pipe_cloexec(int fds[2]);
/* NVIDIA's NVML, loaded at run time (dlopen "libnvidia-ml.so.1"): no link-time dependency, and nothing happens
   on a machine without it. sb_nvml_sample fills the GPUs' mean utilisation (percent) and their memory in bytes,
   summed; it returns 0, or -1 when NVML is absent or fails (errno is not set). */
typedef struct {
    unsigned int utilization_percent;
    unsigned long long memory_used;
    unsigned long long memory_total;
} sb_gpu_sample;
int sb_nvml_sample(sb_gpu_sample *out);
#endif
