#!/bin/sh
# required_kmods names a module no kernel has: the case must be skipped, never run.
echo "ran although its required module does not exist"
exit 1
