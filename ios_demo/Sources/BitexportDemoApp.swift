import SwiftUI

@main
struct BitexportDemoApp: App {
    var body: some Scene {
        WindowGroup { ContentView() }
    }
}
