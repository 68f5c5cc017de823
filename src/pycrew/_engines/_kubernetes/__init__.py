"""Workers as Kubernetes pods: the launcher and the monitor.

``_launcher`` creates one pod per worker and a Secret per start, and reads
pod status into exit codes and reasons; ``_monitor`` lists and ends the pods
(and Secrets) of controllers that are gone.
"""
