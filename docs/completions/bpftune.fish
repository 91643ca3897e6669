complete -c bpftune -s r -l learning_rate -d 'Learning rate 0..4: step and proximity = 1/2^(6-rate) (4: 25%, 0: 1.5625%)' -r
complete -c bpftune -s p -l port -d 'Query server: also listen on 127.0.0.1:PORT (daemon); query that port (client)' -r
complete -c bpftune -l metrics-listen -d 'Serve Prometheus metrics on http://ADDR:PORT/metrics (`:PORT` or `PORT`: 127.0.0.1)' -r
complete -c bpftune -l metrics-textfile -d 'Write Prometheus metrics to FILE (atomically, every 15 s and at exit) for node_exporter\'s textfile collector' -r -F
complete -c bpftune -s q -l query -d 'Query a running daemon (`-q help` lists the queries; a prefix is enough)' -r -f -a "help\t'list supported queries'
tuners\t'show state of tuners'
tunables\t'show list of tunables'
jtunables\t'show list of tunables(json)'
summary\t'show summary of changes'
status\t'show status of tunables'
jstatus\t'show status of tunables(json)'
rollback\t'show changes needed to roll back'
jchanges\t'show recent change records(json)'
jpaths\t'show per-path learning state(json)'
advice\t'show sysctl.d fragment of changes'
jadvice\t'show sysctl.d advice(json)'"
complete -c bpftune -s a -l allow -d 'Only load these tuners (name, e.g. tcp_buffer, or file name tcp_buffer_tuner.so); repeatable' -r -f -a "sysctl\t'bpftune tuner that hands sysctls over to the administrator'
tcp_buffer\t'bpftune tuner for TCP buffer limits, TCP memory and the SYN backlog'
udp_buffer\t'bpftune tuner for UDP receive buffers and UDP memory'
ip_frag\t'bpftune tuner for IP fragment reassembly memory'
net_buffer\t'bpftune tuner for the per-CPU backlog and NAPI budget'
neigh_table\t'bpftune tuner for the ARP and NDISC neighbour tables'
tcp_conn\t'bpftune tuner choosing TCP congestion control per path'
vm\t'bpftune tuner for memory reclaim (watermarks, reserves, slab pressure)'"
complete -c bpftune -s c -l cgroup -d 'cgroup-v2 directory for cgroup programs (mounted there if it is not one)' -r -f -a "(__fish_complete_directories)"
complete -c bpftune -s l -l libdir -d 'Local plugin directory, scanned for tuner files' -r -f -a "(__fish_complete_directories)"
complete -c bpftune -s d -l debug -d 'Debug logging (also libbpf\'s messages and BPF trace_pipe output)'
complete -c bpftune -s D -l daemon -d 'Run in the background (daemon(3), keeping cwd and stdio)'
complete -c bpftune -s h -l help -d 'Print help'
complete -c bpftune -s L -l legacy -d 'Legacy mode: conservative attach flavours only (raw_tp, kprobe, cgroup programs)'
complete -c bpftune -s P -l print-libdir -d 'Print the system plugin directory and exit'
complete -c bpftune -s R -l rollback -d 'Roll back every sysctl bpftune changed when it exits (also after a crash, on the next -R run)'
complete -c bpftune -s s -l stderr -d 'Log to stderr instead of syslog'
complete -c bpftune -s S -l support -d 'Print what BPF support this kernel has, per tuner, and exit'
complete -c bpftune -s V -l version -d 'Print version and exit'
complete -c bpftune -l observe -d 'Observe only: log, count and record what would be changed ("would change ..."), never write a sysctl; see the advice query'
complete -c bpftune -l rollback-now -d 'Restore the original sysctl values a stopped bpftune persisted (-R\'s rule: only values still as bpftune left them) and exit'
