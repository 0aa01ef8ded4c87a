import ArgumentParser
import Emulation
import Plan
import Schedule

// The configuration's choices are typed on the command line too: an unknown value is
// rejected by the parser with the flag, the value and the choices.
extension ScheduleKind: @retroactive ExpressibleByArgument {}
extension ClockChoice: @retroactive ExpressibleByArgument {}
extension LinkChoice: @retroactive ExpressibleByArgument {}
extension Precision: @retroactive ExpressibleByArgument {}
extension FailMode: @retroactive ExpressibleByArgument {}
