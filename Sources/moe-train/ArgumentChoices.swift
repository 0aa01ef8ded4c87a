import ArgumentParser
import Emulation
import Plan
import Schedule
import Model

// The configuration's choices are typed on the command line too: an unknown value is
// rejected by the parser with the flag, the value and the choices.
extension ScheduleKind: ExpressibleByArgument {}
extension ClockChoice: ExpressibleByArgument {}
extension LinkChoice: ExpressibleByArgument {}
extension Precision: ExpressibleByArgument {}
extension FailMode: ExpressibleByArgument {}
extension CheckpointMode: ExpressibleByArgument {}
extension Recompute: ExpressibleByArgument {}
extension AttentionKernel: ExpressibleByArgument {}
extension FFNKind: ExpressibleByArgument {}
